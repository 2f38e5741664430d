# Images for federator and cluster-agent (used by scripts/kind-demo).
#   docker build --target cluster-agent -t federator/cluster-agent:dev .
#   docker build --target federator     -t federator/federator:dev .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p federator -p cluster-agent

FROM gcr.io/distroless/cc-debian12:nonroot AS cluster-agent
COPY --from=build /src/target/release/cluster-agent /usr/local/bin/cluster-agent
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/cluster-agent"]

FROM gcr.io/distroless/cc-debian12:nonroot AS federator
COPY --from=build /src/target/release/federator /usr/local/bin/federator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/federator"]
