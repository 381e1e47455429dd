"""hdrlog: live decrypted HTTP headers of running HTTPS gateways, via eBPF uprobes."""

__version__ = "0.1.0"
