# The serverlessd daemon image for Kubernetes (deploy/kubernetes). Computes
# run in their own mariadb Pods, so this image holds only the static binary.
#
#   docker build --build-arg VERSION=v0.1.0 -t serverlessd:v0.1.0 .

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Dependencies first: a code change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# CGO off: a static binary runs on a base with no libc (SQLite is pure Go).
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/serverlessd/serverlessd/cli.Version=${VERSION}" \
      -o /out/serverlessd . && mkdir /out/data

# distroless static: CA certificates and tzdata, no shell, uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/serverlessd /usr/local/bin/serverlessd
# The data dir (scratch: the proxy's certificate is kept in a Secret on
# Kubernetes) must exist and be the daemon's: distroless has no shell to
# make it at run time.
COPY --from=build --chown=65532:65532 /out/data /var/lib/serverlessd
# In a container the listeners must not be loopback-only; a non-loopback
# API refuses to start without api.tokens (SERVERLESSD_API_TOKENS).
ENV SERVERLESSD_COMPUTE_DRIVER=kubernetes \
    SERVERLESSD_API_LISTEN=0.0.0.0:8080 \
    SERVERLESSD_PROXY_LISTEN=0.0.0.0:3306 \
    SERVERLESSD_DATA_DIR=/var/lib/serverlessd
USER 65532:65532
EXPOSE 3306 8080
ENTRYPOINT ["/usr/local/bin/serverlessd"]
CMD ["serve"]
