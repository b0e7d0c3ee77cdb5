# wxmp in a container: built with the official Rust image, run on plain Ubuntu on port 80.
#   docker build -t wxmp .
#   docker run -d -p 80:80 -e WXMP_TOKEN=yourtoken wxmp
# Configure it with the WXMP_* variables (see README). Mount the rules as a directory, so edits
# saved by rename (most editors, sed -i) are seen by hot reload:
#   -v $PWD/rules:/etc/wxmp/rules:ro -e WXMP_RULES=/etc/wxmp/rules/rules.toml

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole tree (less what .dockerignore drops): Cargo.toml names bench and example targets,
# and the patched HTTP layer lives in vendor/.
COPY . .
RUN cargo build --release --locked --bin wxmp

FROM ubuntu:24.04
COPY --from=build /src/target/release/wxmp /usr/local/bin/wxmp
# An unprivileged user. Docker 20.10 and later start containers with
# net.ipv4.ip_unprivileged_port_start=0, so it may bind port 80 without root and without file
# capabilities (which would make the binary fail to start under --cap-drop ALL). On an older
# engine, pass --user 0 or WXMP_PORT=8080 with -p 80:8080.
# /var/cache/wxmp holds the access_token cache (XDG_CACHE_HOME below); mount a volume there to
# keep the token across container restarts. No ca-certificates package: HTTPS to the WeChat API
# uses rustls with the webpki-roots certificates compiled into the binary.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin wxmp \
    && mkdir -p /etc/wxmp/rules /var/cache/wxmp \
    && chown wxmp /var/cache/wxmp && chmod 700 /var/cache/wxmp
USER wxmp
# MALLOC_ARENA_MAX=2: glibc's default of a heap per thread (up to 8 per core) lets memory creep
# with many handler threads (make soak measured it); two heaps keep it flat.
ENV WXMP_HOST=0.0.0.0 \
    WXMP_PORT=80 \
    WXMP_PATH=/weixin \
    XDG_CACHE_HOME=/var/cache \
    MALLOC_ARENA_MAX=2
EXPOSE 80
# The image has no curl: bash's /dev/tcp asks /healthz, which answers "ok" while the server
# accepts and serves requests.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${WXMP_PORT:-80} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && grep -qx ok <&3"]
# `docker stop` sends SIGTERM: wxmp stops accepting, finishes requests in flight and exits 0
# (1 if a request was still running after 8 s, within Docker's 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/wxmp"]
CMD ["serve"]
