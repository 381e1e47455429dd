// hdrlogtest: Go HTTPS server, reverse proxy and client for hdrlog's real-kernel tests (std lib only).
//
// Built by tests/gobuild.py with whatever Go toolchain the tests use (go1.19 and later must compile it:
// no generics-era helpers, no min/max builtins, no range-over-int).
//
//	hdrlogtest server -cert C -key K [-listen 127.0.0.1:0] [-h2] [-name N] [-upstream https://host:port]
//	    prints "listening PORT" once ready; with -upstream it is a reverse proxy (HTTP/1.1 to the upstream).
//	hdrlogtest client -url https://127.0.0.1:PORT [-tag T] [-requests N] [-conns C] [-h2] [-wait-file F]
//	    C goroutines, each with its own keep-alive connection; prints {"local_port":P,"requests":N} per
//	    connection used, and exits 1 if any request failed.
package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

const token = "Bearer demo-token-9f8e7d6c5b4a" // the token hdrlog's tests expect to see redacted

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: hdrlogtest server|client [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "server":
		server(os.Args[2:])
	case "client":
		client(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}

func server(args []string) {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	cert := fs.String("cert", "", "certificate PEM")
	key := fs.String("key", "", "key PEM")
	listen := fs.String("listen", "127.0.0.1:0", "address")
	h2 := fs.Bool("h2", false, "offer HTTP/2 (ALPN h2)")
	name := fs.String("name", "go-test", "X-Served-By value")
	upstream := fs.String("upstream", "", "reverse proxy to this HTTPS URL")
	fs.Parse(args)

	var handler http.Handler
	if *upstream != "" {
		u, err := url.Parse(*upstream)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		rp := httputil.NewSingleHostReverseProxy(u)
		rp.Transport = &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
			ForceAttemptHTTP2: false,
			MaxIdleConnsPerHost: 64,
		}
		rp.ModifyResponse = func(r *http.Response) error {
			r.Header.Set("X-Proxied-By", *name)
			return nil
		}
		handler = rp
	} else {
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Echo", r.Header.Get("X-Request-Id"))
			w.Header().Set("X-Served-By", *name)
			w.Header().Set("X-Body-Len", strconv.Itoa(len(body)))
			switch {
			case strings.HasPrefix(r.URL.Path, "/missing"):
				w.WriteHeader(404)
				io.WriteString(w, "not found\n")
			case r.Method == "POST":
				w.Header().Set("Location", "/api/orders/7")
				w.WriteHeader(201)
				io.WriteString(w, `{"created":true}`+"\n")
			case r.Method == "DELETE":
				w.WriteHeader(204)
			default:
				w.Header().Set("Content-Type", "text/plain")
				io.WriteString(w, "hello from go\n")
			}
		})
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	if !*h2 {
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening %d\n", ln.Addr().(*net.TCPAddr).Port)
	os.Stdout.Sync()
	if err := srv.ServeTLS(ln, *cert, *key); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type request struct {
	method, path string
	body         []byte
	headers      map[string]string
}

var requests = []request{
	{"GET", "/api/users?id=1&fields=name", nil, map[string]string{"Accept": "application/json", "Authorization": token}},
	{"POST", "/api/orders", []byte(`{"item":"book","qty":2}`), map[string]string{"Content-Type": "application/json"}},
	{"HEAD", "/health", nil, nil},
	{"DELETE", "/api/orders/7", nil, map[string]string{"Authorization": token}},
	{"GET", "/missing", nil, map[string]string{"Accept": "*/*"}},
}

func client(args []string) {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	base := fs.String("url", "", "https://127.0.0.1:PORT")
	tag := fs.String("tag", "go", "X-Request-Id prefix")
	n := fs.Int("requests", 10, "requests in total")
	conns := fs.Int("conns", 2, "goroutines, one keep-alive connection each")
	h2 := fs.Bool("h2", false, "use HTTP/2 when the server offers it")
	waitFile := fs.String("wait-file", "", "wait for this file before the first request")
	fs.Parse(args)
	if *waitFile != "" {
		deadline := time.Now().Add(60 * time.Second)
		for {
			if _, err := os.Stat(*waitFile); err == nil {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintln(os.Stderr, "timed out waiting for", *waitFile)
				os.Exit(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	type result struct {
		LocalPort int    `json:"local_port"`
		Requests  int    `json:"requests"`
		Proto     string `json:"proto"`
	}
	var mu sync.Mutex
	var results []result
	failed := 0
	var wg sync.WaitGroup
	for c := 0; c < *conns; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			tr := &http.Transport{
				TLSClientConfig:     &tls.Config{InsecureSkipVerify: true},
				ForceAttemptHTTP2:   *h2,
				MaxIdleConnsPerHost: 1,
			}
			if *h2 {
				tr.TLSClientConfig.NextProtos = []string{"h2", "http/1.1"}
			}
			hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			perPort := map[int]*result{}
			var order []int
			for i := c; i < *n; i += *conns {
				rq := requests[i%len(requests)]
				var body io.Reader
				if rq.body != nil {
					body = bytes.NewReader(rq.body)
				}
				req, err := http.NewRequest(rq.method, *base+rq.path, body)
				if err != nil {
					panic(err)
				}
				for k, v := range rq.headers {
					req.Header.Set(k, v)
				}
				req.Header.Set("X-Request-Id", fmt.Sprintf("%s-%d", *tag, i))
				req.Header.Set("User-Agent", "hdrlogtest-go-client/1")
				port := 0
				trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
					port = info.Conn.LocalAddr().(*net.TCPAddr).Port
				}}
				req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
				resp, err := hc.Do(req)
				if err != nil {
					fmt.Fprintln(os.Stderr, "request failed:", err)
					mu.Lock()
					failed++
					mu.Unlock()
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				r := perPort[port]
				if r == nil {
					r = &result{LocalPort: port, Proto: resp.Proto}
					perPort[port] = r
					order = append(order, port)
				}
				r.Requests++
			}
			tr.CloseIdleConnections()
			mu.Lock()
			for _, p := range order {
				results = append(results, *perPort[p])
			}
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	enc := json.NewEncoder(os.Stdout)
	for _, r := range results {
		enc.Encode(r)
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "%d requests failed\n", failed)
		os.Exit(1)
	}
}
