# The OIDC sidecar's image for the node tier (hack/images/build.py, name oauth2-proxy): the binary
# hack/testservices/gobinaries.py builds from github.com/oauth2-proxy/oauth2-proxy/v7 (static, CGO
# off), alone, as in the upstream image (distroless, /bin/oauth2-proxy, uid 65532). The build
# context is that binary's cache directory. No CA certificates: the node tier's provider has a
# test CA, which the sidecar reads from spec.auth.oidc.caConfigMapRef.
FROM scratch
COPY oauth2-proxy /bin/oauth2-proxy
USER 65532:65532
ENTRYPOINT ["/bin/oauth2-proxy"]
