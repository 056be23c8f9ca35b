# syntax=docker/dockerfile:1

# Build a static binary; the module cache and build cache are kept between
# builds by BuildKit.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ENV CGO_ENABLED=0
# .git stays out of the build context: the version and commit come as build
# arguments (docker build --build-arg VERSION=v1.2.0 --build-arg COMMIT=...).
ARG VERSION=""
ARG COMMIT=""
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/chatq ./cmd/chatq

# No shell, no package manager, not root: the binary is all there is.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/chatq /chatq
USER nonroot
EXPOSE 8080
ENTRYPOINT ["/chatq"]
