"""bench/nginx_bench.py in parts: common helpers, the processes it drives, one module per part, the targets."""
