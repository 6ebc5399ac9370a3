# facto in a container: a Rust build stage, then a slim runtime stage.
# With a registry:  docker-compose build && docker-compose up -d
# Without one (this project's CI): python3 tests/containers.py image  builds the same
# runtime stage from the host's binary; see README.md, "Containers".

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin facto

FROM debian:bookworm-slim
COPY --from=build /src/target/release/facto /usr/local/bin/facto
ENV FACTO_LISTEN=0.0.0.0:7000 FACTO_DATA_DIR=/data RUST_LOG=info
VOLUME /data
EXPOSE 7000
ENTRYPOINT ["/usr/local/bin/facto"]
CMD ["node"]
