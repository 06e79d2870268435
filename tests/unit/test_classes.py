"""TrackingServerClass: how a class and a team's spec make the spec that runs (pure), which class
a server gets, the class's CRD, and `render --class`."""
from __future__ import annotations

import copy
import io

import pytest
import yaml
from mlflow_operator.api import InvalidTrackingServer, load_trackingserver, load_trackingserverclass
from mlflow_operator.cli import main
from mlflow_operator.constants import CLASS_CRD_FILENAME, DEFAULT_CLASS_ANNOTATION
from mlflow_operator.crd import class_crd_yaml, class_custom_resource_definition, trackingserver_schema
from mlflow_operator.render import render
from mlflow_operator.render.classes import apply_class, class_name_for, default_class, strip_builtin_defaults

from tests.unit.helpers import DB, REPO, make, of_kind
from tests.unit.test_cel_rules import SCHEMA, apply_defaults

SPEC_SCHEMA = trackingserver_schema()["properties"]["spec"]


def klass(spec: dict, name: str = "standard", default: bool = False, created: str | None = None):
    meta: dict = {"name": name}
    if default:
        meta["annotations"] = {DEFAULT_CLASS_ANNOTATION: "true"}
    if created:
        meta["creationTimestamp"] = created
    return load_trackingserverclass({"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServerClass",
                                     "metadata": meta, "spec": spec})


def stored(spec: dict, name: str = "team", namespace: str = "team-a") -> dict:
    """The TrackingServer as the API server stores it: built-in defaults filled in."""
    body = make(spec, name=name, namespace=namespace)
    return apply_defaults(SCHEMA, body)


STANDARD = {
    "defaults": {"auth": {"type": "Basic"}, "workers": 4, "networkPolicy": {"enabled": True},
                 "podTemplate": {"labels": {"platform": "ml"}},
                 "backendStore": {"type": "Database", "uri": DB}},
    "enforced": ["networkPolicy", "image"],
    "artifacts": {"destinationTemplate": "s3://ml-artifacts/{namespace}/{name}",
                  "serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/mlflow-{namespace}-{name}"}},
    "exposure": {"hostTemplate": "{name}.{namespace}.mlflow.example.com", "ingressClassName": "nginx",
                 "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"}},
}


def effective(spec: dict, cls_spec: dict = STANDARD, **kw):
    result = apply_class(stored({"className": "standard", **spec}, **kw), klass(cls_spec), SPEC_SCHEMA)
    return result, load_trackingserver(result.body)


def test_stripping_built_in_defaults_leaves_what_the_team_wrote():
    body = stored({"className": "standard", "workers": 3, "auth": {"type": "Basic"}})
    assert body["spec"]["http"]["maxUploadSize"] == "5Gi"  # the API server's defaulting, as stored
    assert strip_builtin_defaults(body["spec"], SPEC_SCHEMA) == {"className": "standard", "workers": 3, "auth": {"type": "Basic"}}


def test_class_defaults_fill_what_the_team_left_out_and_team_values_win():
    _, ts = effective({"workers": 8, "podTemplate": {"labels": {"team": "fraud"}}})
    assert ts.spec.workers == 8  # the team's value
    assert ts.spec.auth.type == "Basic" and ts.spec.backend_store.type == "Database"  # the class's
    assert ts.spec.pod_template.labels == {"platform": "ml", "team": "fraud"}  # maps merge key by key
    assert ts.spec.http.max_upload_size == "5Gi"  # built-in, set by neither


def test_a_team_value_equal_to_the_built_in_default_does_not_override_a_class_default():
    # Documented limit: the stored spec cannot tell "left out" from "wrote the built-in value".
    _, ts = effective({"workers": 2, "auth": {"type": "None"}})
    assert ts.spec.workers == 4 and ts.spec.auth.type == "Basic"


def test_enforced_fields_take_the_class_value_and_a_different_team_value_is_reported():
    result, ts = effective({"image": "registry.example.com/mlflow:3.18.0", "networkPolicy": {"enabled": True}})
    assert result.overridden == ["image"]  # the same value as the class's is no override
    assert ts.spec.image is None and ts.spec.network_policy.enabled is True
    result, ts = effective({"networkPolicy": {"enabled": True, "ingressFrom": [{"podSelector": {}}]}})
    assert result.overridden == ["networkPolicy"] and ts.spec.network_policy.ingress_from is None


def test_the_class_derives_destination_identity_and_host_per_server():
    _, a = effective({}, name="fraud", namespace="team-fraud")
    _, b = effective({}, name="fraud", namespace="team-risk")
    assert a.spec.artifacts.destination == "s3://ml-artifacts/team-fraud/fraud"
    assert b.spec.artifacts.destination == "s3://ml-artifacts/team-risk/fraud"
    assert a.spec.service_account.annotations == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/mlflow-team-fraud-fraud"}
    manifests = render(a)
    ingress = of_kind(manifests, "Ingress")[0]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["fraud.team-fraud.mlflow.example.com"], "secretName": "fraud-tls"}]
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    account = of_kind(manifests, "ServiceAccount")[0]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("mlflow-team-fraud-fraud")


def test_a_gateway_class_gives_each_server_an_httproute():
    cls = {"exposure": {"hostTemplate": "{name}-{namespace}.ml.example.com", "gatewayParentRefs": [{"name": "shared", "namespace": "gw"}]}}
    _, ts = effective({}, cls)
    route = of_kind(render(ts), "HTTPRoute")[0]
    assert route["spec"]["hostnames"] == ["team-team-a.ml.example.com"]
    assert route["spec"]["parentRefs"][0]["name"] == "shared"
    assert not of_kind(render(ts), "Ingress")


def test_names_at_the_length_limits_and_with_dots():
    long_name, long_namespace = "a" * 40, "n" * 63  # metadata.name is at most 40, a namespace 63
    _, ts = effective({}, name=long_name, namespace=long_namespace)
    assert ts.spec.ingress.hosts == [f"{long_name}.{long_namespace}.mlflow.example.com"]
    _, odd = effective({}, name="x--1", namespace="0-team--a")
    assert odd.spec.artifacts.destination == "s3://ml-artifacts/0-team--a/x--1"
    # One label of 104 characters: refused with the field, nothing rendered.
    joined = copy.deepcopy(STANDARD)
    joined["exposure"]["hostTemplate"] = "{name}-{namespace}.mlflow.example.com"
    result = apply_class(stored({"className": "standard"}, name=long_name, namespace=long_namespace), klass(joined), SPEC_SCHEMA)
    with pytest.raises(InvalidTrackingServer) as refused:
        load_trackingserver(result.body)
    assert refused.value.errors[0].path == "spec.ingress.hosts[0]"


def test_rules_across_fields_hold_for_the_spec_the_class_and_the_team_make():
    # The team's part alone breaks "replicas > 1 needs a database"; the class supplies one.
    load_trackingserver(make({"className": "standard", "replicas": 3}))
    with pytest.raises(InvalidTrackingServer):
        load_trackingserver(make({"replicas": 3}))
    _, ts = effective({"replicas": 3, "auth": {"type": "Basic", "databaseUri": DB}})
    assert ts.spec.replicas == 3
    with pytest.raises(InvalidTrackingServer) as refused:
        effective({"replicas": 3}, {"defaults": {"workers": 4}})
    assert refused.value.errors[0].path == "spec.replicas"


def test_the_default_class_is_the_annotated_one_the_newest_of_several():
    old = klass({}, "old", default=True, created="2026-01-01T00:00:00Z")
    new = klass({}, "new", default=True, created="2026-06-01T00:00:00Z")
    plain = klass({}, "plain")
    assert default_class([old, new, plain]).name == "new"
    assert default_class([plain]) is None


def test_which_class_a_server_runs_with():
    classes = [klass({}, "standard", default=True), klass({}, "gpu")]
    assert class_name_for(make({"className": "gpu"}), classes) == "gpu"
    assert class_name_for(make({}), classes) == "standard"  # never reconciled: today's default
    reconciled = {**make({}), "status": {"observedGeneration": 1, "className": "old-default"}}
    assert class_name_for(reconciled, classes) == "old-default"  # a new default does not move it
    before_classes = {**make({}), "status": {"observedGeneration": 4}}
    assert class_name_for(before_classes, classes) is None  # reconciled without a class: stays so


def test_the_class_crd_is_generated_cluster_scoped_and_documented():
    assert (REPO / "crds" / CLASS_CRD_FILENAME).read_text() == class_crd_yaml(), "run `make crd`"
    assert (REPO / "charts" / "mlflow-operator" / "crds" / CLASS_CRD_FILENAME).read_text() == class_crd_yaml()
    crd = class_custom_resource_definition()
    assert crd["spec"]["scope"] == "Cluster"
    version = crd["spec"]["versions"][0]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Default", "Artifacts", "Host", "Enforced", "Age"]
    defaults = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["defaults"]

    def walk(node, path="defaults"):
        assert "default" not in node and "required" not in node, path
        assert node.get("description"), f"{path} has no description (kubectl explain)"
        for name, prop in node.get("properties", {}).items():
            walk(prop, f"{path}.{name}")

    walk(defaults)
    assert "className" not in defaults["properties"]
    # Inside lists values are whole: an env var still needs its name.
    env = defaults["properties"]["podTemplate"]["properties"]["extraEnv"]["items"]
    assert env["required"] == ["name"]


def test_render_with_class_prints_the_class_notes_and_refuses_an_unknown_class(tmp_path):
    (tmp_path / "class.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServerClass", "metadata": {"name": "standard"}, "spec": STANDARD}))
    server = make({"className": "standard", "image": "registry.example.com/mlflow:3.18.0"}, namespace="team-a")
    (tmp_path / "ts.yaml").write_text(yaml.safe_dump(server))
    out, err = io.StringIO(), io.StringIO()
    assert main(["render", "-f", str(tmp_path / "ts.yaml"), "--class", str(tmp_path)], out=out, err=err) == 0, err.getvalue()
    assert "spec.image is enforced by TrackingServerClass 'standard'" in err.getvalue()
    assert "s3://ml-artifacts/team-a/team" in out.getvalue() and "registry.example.com" not in out.getvalue()
    (tmp_path / "ts.yaml").write_text(yaml.safe_dump(make({"className": "gold"})))
    out, err = io.StringIO(), io.StringIO()
    assert main(["render", "-f", str(tmp_path / "ts.yaml"), "--class", str(tmp_path / "class.yaml")], out=out, err=err) == 1
    assert "names TrackingServerClass 'gold', which no --class file holds" in err.getvalue() and out.getvalue() == ""


def test_the_operator_holds_a_server_whose_class_is_missing_or_cannot_work():
    from mlflow_operator.controller.reconcile import with_class

    body = {**stored({"className": "standard"}), "status": {"observedGeneration": 1, "conditions": [
        {"type": "Ready", "status": "True", "reason": "Ready", "message": "", "lastTransitionTime": "2026-12-01T00:00:00Z"}]}}
    body["metadata"]["generation"] = 1
    _, name, _, held = with_class(body, {})
    conditions = {c["type"]: c for c in held.status["conditions"]}
    assert name == "standard" and held.status["className"] == "standard"
    assert conditions["ClassApplied"]["reason"] == "ClassNotFound" and conditions["Ready"]["status"] == "True"
    # The class makes the team's replicas impossible: nothing applied, the reason named.
    replicated = copy.deepcopy(body)
    replicated["spec"]["replicas"] = 3
    _, _, _, held = with_class(replicated, {"standard": klass({"defaults": {"workers": 3}})})
    applied = next(c for c in held.status["conditions"] if c["type"] == "ClassApplied")
    assert applied["reason"] == "InvalidWithClass" and "spec.replicas" in applied["message"]
    effective_body, _, condition, held = with_class(body, {"standard": klass(STANDARD)})
    assert held is None and condition.status is True
    assert effective_body["spec"]["artifacts"]["destination"] == "s3://ml-artifacts/team-a/team"


def test_provisioned_database_names_are_stable_short_and_distinct():
    from mlflow_operator.controller.provisioning.postgres import identifier, redact

    assert identifier("team-a", "b-c") == identifier("team-a", "b-c")  # stable
    assert identifier("team-a", "b-c") != identifier("team-a-b", "c")  # same readable part, apart
    longest = identifier("n" * 63, "a" * 40, "auth")
    assert len(longest.encode()) <= 63 and longest.startswith("mlflow_") and longest.endswith(longest[-8:])
    assert identifier("n" * 63, "a" * 40) != identifier("n" * 63, "a" * 39 + "b")
    assert all(c.isalnum() or c == "_" for c in identifier("0-team--a", "x--1"))
    assert redact("could not connect to postgresql://admin:s3cret@db:5432/x", "s3cret") == \
        "could not connect to postgresql://admin:***@db:5432/x"


def test_a_database_class_points_each_server_at_its_secret_and_the_auth_database_beside_it():
    cls = {"database": {"adminSecretRef": {"name": "pg-admin"}}, "defaults": {"auth": {"type": "Basic"}, "replicas": 2},
           "artifacts": {"destinationTemplate": "s3://ml-artifacts/{namespace}/{name}"}}
    _, ts = effective({}, cls)
    assert ts.spec.backend_store.uri.secret_key_ref.name == "team-database"
    assert ts.spec.auth.database_uri.secret_key_ref.key == "auth-uri"
    assert ts.spec.replicas == 2  # several replicas: both databases are shared ones


def test_mysql_names_fit_its_limits_and_stay_apart():
    from mlflow_operator.controller.provisioning import mysql

    user, db, auth = mysql.names("n" * 63, "a" * 40, auth=True)
    assert len(user.encode()) <= 32 and len(db.encode()) <= 64 and len(auth.encode()) <= 64
    assert len(mysql._grant_pattern(db)) <= 64 and len(mysql._grant_pattern(auth)) <= 64  # MariaDB checks the pattern
    assert len({user, db, auth}) == 3 and mysql.names("n" * 63, "a" * 40, auth=True) == (user, db, auth)  # stable
    assert mysql.names("team-a", "b-c", False)[:2] != mysql.names("team-a-b", "c", False)[:2]
    assert mysql.names("n" * 63, "a" * 40, False)[0] != mysql.names("n" * 63, "a" * 39 + "b", False)[0]
    assert all(c.isalnum() or c == "_" for c in user + db)
    assert mysql._grant_pattern("mlflow_a_b") == r"mlflow\_a\_b"  # '_' is a wildcard in a GRANT
    assert mysql.check_admin_uri("postgresql://admin:x@db/postgres").startswith("the admin URI must start with mysql://")
    assert mysql.check_admin_uri("mysql://admin:x@db:3306/") is None
    assert mysql.uri("u", "p/w", "db", 3306, "d") == "mysql://u:p%2Fw@db:3306/d"


def test_minio_names_and_the_policy_allow_the_prefix_only():
    from mlflow_operator.controller.provisioning import minio

    user, policy_name = minio.names("team-a", "mlflow")
    assert len(user) <= 20 and user == minio.names("team-a", "mlflow")[0] != minio.names("team-a-mlflow", "x")[0]
    assert policy_name.startswith("mlflow-team-a-mlflow-") and len(minio.names("n" * 63, "a" * 40)[1]) <= 128
    where = minio.place("s3://ml-artifacts/team-a/mlflow")
    assert (where.bucket, where.prefix, where.uri) == ("ml-artifacts", "team-a/mlflow", "s3://ml-artifacts/team-a/mlflow/")
    statements = minio.policy(where)["Statement"]
    assert statements[0]["Resource"] == ["arn:aws:s3:::ml-artifacts/team-a/mlflow/*"]  # "/*": not team-a/mlflow-2
    assert statements[1]["Condition"]["StringLike"]["s3:prefix"] == ["team-a/mlflow", "team-a/mlflow/*"]


def test_a_minio_class_gives_each_server_its_keys_secret_and_needs_s3():
    cls = {"artifacts": {"destinationTemplate": "s3://ml-artifacts/{namespace}/{name}",
                         "minio": {"endpointUrl": "http://minio.storage.svc:9000/", "region": "us-east-1",
                                   "adminSecretRef": {"name": "minio-admin"}}}}
    _, ts = effective({}, cls)
    s3 = ts.spec.artifacts.s3
    assert s3.endpoint_url == "http://minio.storage.svc:9000" and s3.region == "us-east-1"
    assert s3.access_key_id.secret_key_ref.name == "team-s3" and s3.secret_access_key.secret_key_ref.key == "secret-access-key"
    with pytest.raises(InvalidTrackingServer, match="destinationTemplate must be s3://"):
        klass({**cls, "artifacts": {**cls["artifacts"], "destinationTemplate": "gs://b/{namespace}/{name}"}})
