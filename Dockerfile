# wxmp in a container: built with the official Rust image, run on plain Ubuntu on port 80.
#   docker build -t wxmp .
#   docker run -d -p 80:80 -e WXMP_TOKEN=yourtoken wxmp
# Configure it with the WXMP_* variables (see README); the rules file can be mounted, e.g.
#   -v $PWD/rules.toml:/etc/wxmp/rules.toml -e WXMP_RULES=/etc/wxmp/rules.toml

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole tree (less what .dockerignore drops): Cargo.toml names bench and example targets,
# and the patched HTTP layer lives in vendor/.
COPY . .
RUN cargo build --release --locked --bin wxmp

FROM ubuntu:24.04
COPY --from=build /src/target/release/wxmp /usr/local/bin/wxmp
# The container runs as root so it can bind port 80; nothing else runs in it.
# MALLOC_ARENA_MAX=2: glibc's default of a heap per thread (up to 8 per core) lets memory creep
# with many handler threads (make soak measured it); two heaps keep it flat.
ENV WXMP_HOST=0.0.0.0 \
    WXMP_PORT=80 \
    WXMP_PATH=/weixin \
    MALLOC_ARENA_MAX=2
EXPOSE 80
# `docker stop` sends SIGTERM: wxmp stops accepting, finishes requests in flight and exits 0
# (1 if a request was still running after 8 s, within Docker's 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/wxmp"]
CMD ["serve"]
