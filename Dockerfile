# Images for federator and cluster-agent (used by examples/kind/demo), under the names
# `federator join` uses by default (see docs/images.md):
#   docker build --target cluster-agent -t localhost/federator/cluster-agent:0.1.0 .
#   docker build --target federator     -t localhost/federator/federator:0.1.0 .
# Without Docker, scripts/images builds the same images as OCI archives from the project's
# binaries (testbed::image): same entrypoint, user 65532:65532, working directory, environment
# and Debian 12 libraries as the distroless base below. Those archives are what the testbed's
# nodes run, so what is proven there is what this Dockerfile builds.
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
