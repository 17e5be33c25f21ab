# The runner image: a static (musl) kubectl-canary on an empty base, running as non-root.
#   docker build -t kubectl-canary:0.1.0 .
#   kubectl canary install-runner -n shop --image <your-registry>/kubectl-canary:0.1.0
FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev ca-certificates
WORKDIR /src
COPY . .
ARG KUBECTL_CANARY_GIT_COMMIT=unknown
ENV KUBECTL_CANARY_GIT_COMMIT=${KUBECTL_CANARY_GIT_COMMIT}
RUN cargo build --release --locked --bin kubectl-canary \
 && cp target/release/kubectl-canary /kubectl-canary

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /kubectl-canary /usr/local/bin/kubectl-canary
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kubectl-canary"]
CMD ["run", "--all"]
