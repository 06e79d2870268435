"""Names and versions shared by the API, the renderer and the operator (one place for each)."""

# The MLflow release the server image is built from. Bump it here only: the default image tag,
# the CRD's documentation and the tests all follow.
MLFLOW_VERSION = "3.18.0"
DEFAULT_IMAGE_REPOSITORY = "ghcr.io/mlflow-operator/mlflow-server"
DEFAULT_IMAGE = f"{DEFAULT_IMAGE_REPOSITORY}:{MLFLOW_VERSION}"
# Kubernetes' default DNS domain; the operator's --cluster-domain names another one.
DEFAULT_CLUSTER_DOMAIN = "cluster.local"

GROUP = "mlflow-operator.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrackingServer"
PLURAL = "trackingservers"
SINGULAR = "trackingserver"
SHORT_NAMES = ["mlts"]
CATEGORIES = ["mlflow"]
CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_FILENAME = f"{CRD_NAME}.yaml"
# The platform team's TrackingServerClass (cluster-scoped, like StorageClass and IngressClass).
CLASS_KIND = "TrackingServerClass"
CLASS_PLURAL = "trackingserverclasses"
CLASS_SINGULAR = "trackingserverclass"
CLASS_SHORT_NAMES = ["mltsc"]
CLASS_CRD_NAME = f"{CLASS_PLURAL}.{GROUP}"
CLASS_CRD_FILENAME = f"{CLASS_CRD_NAME}.yaml"

# Our annotation and label prefix.
PREFIX = f"{GROUP}/"
CONFIG_HASH_ANNOTATION = f"{PREFIX}config-hash"
RETENTION_ANNOTATION = f"{PREFIX}retention-policy"
DATA_LOCATIONS_ANNOTATION = f"{PREFIX}data-locations"
# Marks the class of TrackingServers that name none (as storageclass.kubernetes.io/is-default-class).
DEFAULT_CLASS_ANNOTATION = f"{PREFIX}is-default-class"

# The server container: port, probes, writable paths and the user it runs as.
HTTP_PORT = 5000
HTTP_PORT_NAME = "http"
HEALTH_PATH = "/health"
# The server image's readiness: a query on the tracking database (mlflow_entrypoint.ready).
READY_PATH = "/readyz"
# Prometheus metrics: a port of their own, which the Ingress and HTTPRoute never route to.
METRICS_PORT = 9090
METRICS_PORT_NAME = "metrics"
METRICS_PATH = "/metrics"
RUN_AS_ID = 10001
SCRATCH_DIR = "/tmp"
DATA_DIR = "/data"
EMBEDDED_SQLITE_URI = f"sqlite:///{DATA_DIR}/mlflow.db"  # four slashes: an absolute path
EMBEDDED_FILE_STORE_URI = f"file://{DATA_DIR}/mlruns"
EMBEDDED_AUTH_DB_URI = f"sqlite:///{DATA_DIR}/auth.db"
LOCAL_ARTIFACTS_PATH = f"{DATA_DIR}/artifacts"
ENTRYPOINT = "mlflow-entrypoint"

# MLflow's own artifact proxy routes. In Split mode they go to the artifacts-only pods.
ARTIFACT_PROXY_PATHS = ("/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts")
ARTIFACT_PROXY_API = "/api/2.0/mlflow-artifacts/artifacts"
# Kubernetes auth: the cluster-scoped ClusterRoleBinding of a TrackingServer cannot carry an owner
# reference to it (namespaced owners of cluster-scoped objects are ignored by garbage collection),
# so it names its TrackingServer by namespace label and uid annotation.
OWNER_NAMESPACE_LABEL = f"{PREFIX}namespace"
OWNER_UID_ANNOTATION = f"{PREFIX}owner-uid"
# Built into every cluster: create on tokenreviews and subjectaccessreviews, nothing more.
TOKEN_REVIEWER_CLUSTER_ROLE = "system:auth-delegator"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

# OIDC sign-in (auth.type OIDC): an oauth2-proxy sidecar takes the pod's API port, and the server
# listens on the pod's loopback only, so no request reaches MLflow without passing the proxy.
OAUTH2_PROXY_IMAGE = "quay.io/oauth2-proxy/oauth2-proxy:v7.15.6"
SERVER_LOOPBACK_PORT = 5001
# oauth2-proxy's own liveness endpoint (answered by the proxy, not passed to the server).
OAUTH2_PROXY_PING_PATH = "/ping"
