"""deploy/ is checked offline, so that it cannot drift from rawserve:

- the Kubernetes objects against the API schemas (kubernetes-validate, strict:
  an unknown field fails), for the oldest and newest Kubernetes we target;
- the KServe objects loaded field by field into the kserve SDK's classes
  (V1alpha1ServingRuntime, V1beta1InferenceService and the Kubernetes classes
  inside them), refusing any field a class does not have;
- the exact command lines of the Deployment, the ServingRuntime and the
  Dockerfile run as ``python -m rawserve`` (ports and paths mapped to free
  ports and a temporary directory), answering their own probes and a V2
  inference.

The kserve SDK drags in FastAPI, uvicorn, uvloop, gRPC and pandas (about 430
MB, a minute to install), which must not land in rawserve's own virtualenv
(uvloop would change what ``--loop auto`` means for every other test); it
lives in build/venv-kserve, made by tools/run_tests.py before the suite (or
here on first use) from pyproject.toml's ``kserve-sdk`` extra and reused
while that pin holds.
"""

from __future__ import annotations

import copy
import inspect
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from rawserve.serving.tls import ensure_dev_certificate
from tests.services import free_port
from tests.test_builtin_app import LABELS, ROWS
from tests.test_model_dir import digits_at, serve, v2_row

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KSERVE = DEPLOY / "kserve"
# The oldest Kubernetes the manifests need (a LoadBalancer Service with TCP
# and UDP is GA from 1.26; pick a still-supported release above it) and the
# newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
PYTHON_M_RAWSERVE = ["python", "-m", "rawserve"]
RAWSERVE_UID = 10001


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def load_one(path: Path) -> dict[str, Any]:
    [doc] = load_all(path)
    return doc


def manifests() -> list[Path]:
    return sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    [only] = pod_spec["containers"]
    return only


def flags(args: list[str]) -> list[tuple[str, str]]:
    """``--flag=value`` and ``--flag value`` alike, in order."""
    out: list[tuple[str, str]] = []
    it = iter(args)
    for arg in it:
        assert arg.startswith("--"), f"not a flag: {arg!r}"
        name, sep, value = arg.partition("=")
        out.append((name, value if sep else next(it)))
    return out


def flag(args: list[str], name: str) -> str:
    [value] = [v for f, v in flags(args) if f == name]
    return value


# -- Kubernetes: schemas ----------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifests(), ids=lambda p: p.name)
def test_kubernetes_manifests_match_the_api_schema(path: Path, version: str) -> None:
    for doc in load_all(path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_a_typo_in_a_manifest_fails_validation() -> None:
    doc = load_one(KUBERNETES / "deployment.yaml")
    bad = copy.deepcopy(doc)
    container(bad["spec"]["template"]["spec"])["livenessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_applies_every_manifest_but_the_alternative_autoscaler() -> None:
    kustomization = load_one(KUBERNETES / "kustomization.yaml")
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in manifests()} - {"hpa-queue-depth.yaml"}


# -- Kubernetes: what the objects say to each other ---------------------------------


def test_the_service_autoscalers_and_budget_point_at_the_deployment() -> None:
    deployment = load_one(KUBERNETES / "deployment.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    service = load_one(KUBERNETES / "service.yaml")
    assert service["spec"]["selector"] == labels
    assert load_one(KUBERNETES / "pdb.yaml")["spec"]["selector"]["matchLabels"] == labels
    for name in ("hpa.yaml", "hpa-queue-depth.yaml"):
        target = load_one(KUBERNETES / name)["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    named = {p["name"]: p for p in container(deployment["spec"]["template"]["spec"])["ports"]}
    for port in service["spec"]["ports"]:
        assert named[port["targetPort"]]["protocol"] == port["protocol"], port


def test_http3_is_exposed_on_the_port_alt_svc_names() -> None:
    # rawserve advertises Alt-Svc h3=":<its QUIC port>": a client tries UDP on
    # that number at the same host, so the Service must expose it unchanged.
    deployment = load_one(KUBERNETES / "deployment.yaml")
    c = container(deployment["spec"]["template"]["spec"])
    quic_port = int(flag(c["args"], "--quic-port"))
    [h3] = [p for p in c["ports"] if p["protocol"] == "UDP"]
    assert h3["containerPort"] == quic_port
    [udp] = [
        p for p in load_one(KUBERNETES / "service.yaml")["spec"]["ports"] if p["protocol"] == "UDP"
    ]
    assert udp["port"] == quic_port


def test_the_queue_depth_autoscaler_reads_a_metric_rawserve_exports() -> None:
    from rawserve.inference.app import create_app

    hpa = load_one(KUBERNETES / "hpa-queue-depth.yaml")
    [pods] = [m for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    name = pods["pods"]["metric"]["name"]
    exposition = create_app().metrics.render().decode()
    assert f"# TYPE {name} gauge" in exposition


def test_the_tls_secret_is_mounted_where_the_command_line_reads_it() -> None:
    pod = load_one(KUBERNETES / "deployment.yaml")["spec"]["template"]["spec"]
    c = container(pod)
    [mount] = [m for m in c["volumeMounts"] if m["name"] == "tls"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "tls"]
    assert "secretName" in volume["secret"]
    # A kubernetes.io/tls Secret holds tls.crt and tls.key.
    assert flag(c["args"], "--certfile") == f"{mount['mountPath']}/tls.crt"
    assert flag(c["args"], "--keyfile") == f"{mount['mountPath']}/tls.key"


def test_the_pod_runs_as_the_images_user() -> None:
    pod = load_one(KUBERNETES / "deployment.yaml")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == RAWSERVE_UID
    assert f"USER {RAWSERVE_UID}:" in (DEPLOY / "Dockerfile").read_text()
    assert f"--uid {RAWSERVE_UID}" in (DEPLOY / "Dockerfile").read_text()


# -- KServe: the SDK's classes ----------------------------------------------------


def _kserve_strict_load() -> None:
    """Run inside build/venv-kserve: load each document of the JSON file named
    by argv[1] into its kserve SDK class, refusing unknown fields and wrong
    types (the SDK's own deserializer drops unknown fields silently), and
    print one JSON result per document."""
    import json
    import sys

    import kserve
    from kubernetes import client as k8s

    top = {
        ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
        ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    }
    scalars: dict[str, tuple[type, ...]] = {
        "str": (str,),
        "int": (int,),
        "float": (int, float),
        "bool": (bool,),
        "datetime": (str,),
        "date": (str,),
        "object": (object,),
        # A quantity ("500m", "1Gi", 2) in resource maps.
        "ResourceQuantity": (str, int, float),
    }

    def build(kind: str, value: object, where: str) -> object:
        # kserve's classes spell types "list[X]" and "dict(str, X)"; the
        # Kubernetes client's "List[X]" and "Dict[str, X]".
        if kind.lower().startswith("list["):
            if not isinstance(value, list):
                raise ValueError(f"{where}: expected a list, got {value!r}")
            return [build(kind[5:-1], v, f"{where}[{i}]") for i, v in enumerate(value)]
        if kind.lower().startswith(("dict(", "dict[")):
            if not isinstance(value, dict):
                raise ValueError(f"{where}: expected a mapping, got {value!r}")
            inner = kind[kind.index(",") + 1 : -1].strip()
            return {k: build(inner, v, f"{where}.{k}") for k, v in value.items()}
        if kind in scalars:
            numeric = kind in ("int", "float")
            if not isinstance(value, scalars[kind]) or (numeric and isinstance(value, bool)):
                raise ValueError(f"{where}: expected {kind}, got {value!r}")
            return value
        klass = getattr(kserve, kind, None) or getattr(k8s, kind)
        if hasattr(klass, "model_validate"):
            # The Kubernetes client's classes are pydantic models with strict
            # types and extra="forbid": they refuse unknown fields themselves.
            try:
                return klass.model_validate(value)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a {kind} mapping, got {value!r}")
        attributes = {json_key: attr for attr, json_key in klass.attribute_map.items()}
        unknown = sorted(set(value) - set(attributes))
        if unknown:
            raise ValueError(f"{where}: {kind} has no field {', '.join(unknown)}")
        kwargs = {
            attributes[k]: build(klass.openapi_types[attributes[k]], v, f"{where}.{k}")
            for k, v in value.items()
        }
        return klass(**kwargs)

    results = []
    with open(sys.argv[1]) as f:
        documents = json.load(f)
    for doc in documents:
        try:
            kind = top[(doc.get("apiVersion"), doc.get("kind"))]
            obj = build(kind, doc, doc["kind"])
            results.append({"ok": True, "class": type(obj).__name__})
        except (KeyError, ValueError, TypeError) as exc:
            results.append({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    print(json.dumps(results))


@pytest.fixture(scope="session")
def kserve_python() -> Path:
    # tools/run_tests.py makes it before the suite starts; a bare pytest run
    # makes it here, once.
    from tools.run_tests import ensure_kserve_venv

    try:
        return ensure_kserve_venv()
    except SystemExit as exc:
        pytest.fail(str(exc))


def kserve_load(python: Path, documents: list[dict[str, Any]], tmp_path: Path) -> list[Any]:
    docs = tmp_path / "documents.json"
    docs.write_text(json.dumps(documents))
    script = inspect.getsource(_kserve_strict_load) + "\n_kserve_strict_load()\n"
    done = subprocess.run(
        [str(python), "-c", script, str(docs)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    results: list[Any] = json.loads(done.stdout.splitlines()[-1])
    return results


def test_kserve_objects_load_into_the_sdk_classes_and_typos_do_not(
    kserve_python: Path, tmp_path: Path
) -> None:
    runtime = load_one(KSERVE / "servingruntime.yaml")
    service = load_one(KSERVE / "inferenceservice.yaml")
    typo_top = copy.deepcopy(runtime)
    typo_top["spec"]["supportedModelFormat"] = typo_top["spec"].pop("supportedModelFormats")
    typo_nested = copy.deepcopy(runtime)
    container(typo_nested["spec"])["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    typo_model = copy.deepcopy(service)
    typo_model["spec"]["predictor"]["model"]["storageURI"] = "pvc://models/digits"
    wrong_type = copy.deepcopy(service)
    wrong_type["spec"]["predictor"]["minReplicas"] = "1"
    results = kserve_load(
        kserve_python, [runtime, service, typo_top, typo_nested, typo_model, wrong_type], tmp_path
    )
    assert results[:2] == [
        {"ok": True, "class": "V1alpha1ServingRuntime"},
        {"ok": True, "class": "V1beta1InferenceService"},
    ]
    expected = ["supportedModelFormat", "paht", "storageURI", "minReplicas"]
    for result, fragment in zip(results[2:], expected, strict=True):
        assert not result["ok"] and fragment in result["error"], result


def test_the_runtime_serves_what_the_inference_service_asks_for() -> None:
    runtime = load_one(KSERVE / "servingruntime.yaml")["spec"]
    model = load_one(KSERVE / "inferenceservice.yaml")["spec"]["predictor"]["model"]
    assert model["runtime"] == load_one(KSERVE / "servingruntime.yaml")["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["protocolVersions"]
    args = container(runtime)["args"]
    name, _, directory = flag(args, "--model-dir").partition("=")
    # KServe fills in {{.Name}} and copies the storageUri to /mnt/models.
    assert (name, directory) == ("{{.Name}}", "/mnt/models")


# -- the exact command lines ------------------------------------------------------


class CommandLine:
    """A manifest's rawserve command line made to run here: ``--host`` on
    127.0.0.1, every port on a free one (the same container port on the same
    free port), every absolute path under one of ``paths``, ``{{.Name}}`` (what
    KServe substitutes) as ``name``."""

    def __init__(self, command: list[str], args: list[str], paths: dict[str, Path], name: str):
        assert command == PYTHON_M_RAWSERVE, command
        self.ports: dict[int, int] = {}
        self.argv: list[str] = []
        for key, value in flags(args):
            value = value.replace("{{.Name}}", name)
            if key == "--host":
                value = "127.0.0.1"
            elif key in ("--http-port", "--port", "--quic-port") and int(value) > 0:
                value = str(self.port(int(value)))
            else:
                value = self._path(value, paths)
            self.argv += [key, value]

    def port(self, container_port: int) -> int:
        return self.ports.setdefault(container_port, free_port())

    @staticmethod
    def _path(value: str, paths: dict[str, Path]) -> str:
        prefix, sep, path = value.rpartition("=")
        if not path.startswith("/"):
            return value
        for root, here in paths.items():
            if path == root or path.startswith(root + "/"):
                return f"{prefix}{sep}{here}{path[len(root) :]}"
        raise AssertionError(f"{value!r}: no local stand-in for this path in the test")


def check_serving(url: str, probes: list[str], model: str) -> None:
    for path in probes:
        assert httpx.get(f"{url}{path}").status_code == 200, path
    answer = httpx.post(f"{url}/v2/models/{model}/infer", json=v2_row(ROWS[0]))
    assert answer.status_code == 200, answer.text
    label = next(o for o in answer.json()["outputs"] if o["name"] == "label")
    assert label["data"] == [LABELS[0]]


def http_probes(c: dict[str, Any]) -> Iterator[tuple[str, int | str]]:
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        if kind in c:
            get = c[kind]["httpGet"]
            yield get["path"], get["port"]


def image_repository(root: Path) -> Path:
    """The model repository the Dockerfile bakes at /models."""
    digits_at(root / "digits" / "1" / "model.onnx", [str(i) for i in range(10)])
    return root


def test_the_deployment_command_line_serves_its_probes_tls_and_v2(tmp_path: Path) -> None:
    pod = load_one(KUBERNETES / "deployment.yaml")["spec"]["template"]["spec"]
    c = container(pod)
    tls = tmp_path / "tls"
    certfile, keyfile, _ = ensure_dev_certificate(tls)
    shutil.copyfile(certfile, tls / "tls.crt")
    shutil.copyfile(keyfile, tls / "tls.key")
    paths = {"/etc/rawserve/tls": tls, "/models": image_repository(tmp_path / "models")}
    line = CommandLine(c["command"], c["args"], paths, name="unused")
    by_name = {p["name"]: p["containerPort"] for p in c["ports"]}
    probes = list(http_probes(c))
    assert {path for path, _ in probes} == {"/healthz", "/readyz"}
    with serve(line.argv, cwd=tmp_path) as url:
        for path, port in probes:
            local = line.ports[by_name[port] if isinstance(port, str) else port]
            assert httpx.get(f"http://127.0.0.1:{local}{path}").status_code == 200
        check_serving(url, [], "digits")
        tls_port = line.ports[by_name["https"]]
        with httpx.Client(http2=True, verify=False) as client:
            answer = client.get(f"https://127.0.0.1:{tls_port}/readyz")
            assert (answer.status_code, answer.http_version) == (200, "HTTP/2")
            assert answer.headers["alt-svc"].startswith(f'h3=":{line.ports[by_name["h3"]]}"')


def test_the_serving_runtime_command_line_serves_the_inference_service(tmp_path: Path) -> None:
    runtime = load_one(KSERVE / "servingruntime.yaml")
    service = load_one(KSERVE / "inferenceservice.yaml")
    c = container(runtime["spec"])
    mount = tmp_path / "mnt" / "models"
    # storageUri holding model.onnx, as KServe's storage initializer copies it.
    digits_at(mount / "model.onnx")
    name = service["metadata"]["name"]
    line = CommandLine(c["command"], c["args"], {"/mnt/models": mount}, name=name)
    [port] = c["ports"]
    probes = [path for path, probe_port in http_probes(c) if probe_port == port["containerPort"]]
    assert sorted(probes) == ["/healthz", "/readyz"]
    with serve(line.argv, cwd=tmp_path) as url:
        assert url.endswith(f":{line.ports[port['containerPort']]}")
        check_serving(url, probes, name)
        # The V2 routes KServe's ingress forwards, under the service's name.
        assert httpx.get(f"{url}/v2/models/{name}/ready").status_code == 200
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200


def dockerfile_exec(instruction: str) -> list[str]:
    """The exec-form JSON array of a Dockerfile instruction, across continuation lines."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    [line] = [ln for ln in text.splitlines() if ln.startswith(instruction + " ")]
    value: list[str] = json.loads(line[line.index("[") :])
    return value


def test_the_image_command_line_and_healthcheck_work(tmp_path: Path) -> None:
    entrypoint, cmd = dockerfile_exec("ENTRYPOINT"), dockerfile_exec("CMD")
    paths = {
        "/srv/rawserve/certs": tmp_path / "certs",
        "/models": image_repository(tmp_path / "models"),
    }
    line = CommandLine(entrypoint, cmd, paths, name="unused")
    healthcheck = dockerfile_exec("HEALTHCHECK --interval=10s --timeout=3s --start-period=30s")
    assert healthcheck[:2] == ["python", "-c"]
    with serve(line.argv, cwd=tmp_path) as url:
        check_serving(url, ["/healthz", "/readyz"], "digits")
        probe = healthcheck[2].replace("127.0.0.1:8000", f"127.0.0.1:{line.ports[8000]}")
        assert probe != healthcheck[2]
        assert subprocess.run([sys.executable, "-c", probe], timeout=30).returncode == 0
