# syntax=docker/dockerfile:1
# r8im's three binaries — r8im, worker, enqueue — in one small, non-root image.
#
#   docker build --build-arg COMMIT=$(git rev-parse --short=12 HEAD) -t r8im .
#   docker run --rm r8im r8im --version
#
# The binaries are built by `make build`, so they carry exactly the flags CI
# builds them with (`make test` runs `make build`): static (CGO_ENABLED=0),
# -trimpath, stripped, the commit stamped for --version.
# No Docker engine runs on the project's build machines; docker-compose.yml is
# checked with `docker-compose config` and the same stack is tested natively.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG COMMIT=unknown
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    make build COMMIT=${COMMIT} && ./bin/worker --version

# Static binaries need no libc: distroless/static has CA certificates, tzdata
# and a non-root user (uid 65532), and no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/bin/r8im /src/bin/worker /src/bin/enqueue /usr/local/bin/
USER nonroot:nonroot
# Inside a container, serve /metrics, /healthz, /readyz and events on every
# interface (the binaries' defaults are loopback).
ENV R8IM_HTTP_ADDR=0.0.0.0:9090 \
    R8IM_EVENTS_ADDR=0.0.0.0:8080 \
    R8IM_LOG_FORMAT=json
EXPOSE 9090 8080
HEALTHCHECK --interval=10s --timeout=5s --retries=3 CMD ["worker", "probe"]
CMD ["worker"]
