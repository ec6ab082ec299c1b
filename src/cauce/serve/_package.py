"""``cauce package``: a Dockerfile and Kubernetes manifests that serve one model directory.

Written into OUT::

    Dockerfile          python slim image, torch + cauce[serve], the model under /models/NAME
    .dockerignore
    wheels/             cauce built from its checkout, when it runs from one (see _wheel.py)
    model/              a copy of the model directory (the build context holds everything)
    k8s/deployment.yaml readiness /v2/health/ready, liveness /v2/health/live, requests, GPUs,
                        the token from a Secret (secretKeyRef), never the token itself
    k8s/service.yaml    ClusterIP on the server's port
    k8s/hpa.yaml        autoscaling/v2 on CPU utilization
    k8s/inferenceservice.yaml   with --kserve, in place of the three above: a KServe
                        InferenceService whose predictor is the image, speaking the Open
                        Inference Protocol, with the same probes, resources and token

The manifests are plain dicts dumped as YAML (no anchors nor aliases); the tests check them
against the Kubernetes API's JSON schemas. Building the image needs docker (not run by cauce
or its tests).
"""

from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cauce.serve._dockerfile import dockerfile
from cauce.serve._spec import ModelSpec, read_spec
from cauce.serve._wheel import wheel_into
from cauce.serve.api import SettingsError

__all__ = ["Pods", "inference_service", "manifests", "package"]

_PORT_NAME = "http"


def _k8s_name(name: str) -> str:
    """A DNS-1035 label: lowercase letters, digits and '-', starting with a letter."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not label or not label[0].isalpha():
        label = f"model-{label}".rstrip("-")
    return label[:63].rstrip("-")


#: A Kubernetes quantity (cpu, memory): a positive number with an SI or binary suffix.
_QUANTITY = re.compile(r"^(\d+(\.\d*)?|\.\d+)([eE]\d+|[KMGTPE]i|[numkMGTPE])?$")
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
#: An image reference: [host[:port]/]path[:tag][@sha256:digest].
_IMAGE = re.compile(
    rf"^(?:[A-Za-z0-9.-]+(?::\d+)?/)?{_PATH_PART}(?:/{_PATH_PART})*"
    r"(?::\w[\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # DNS-1123: a namespace


def _valid(value: str, pattern: re.Pattern[str]) -> bool:
    found = pattern.match(value) if len(value) <= 255 else None
    return found is not None and (pattern is not _QUANTITY or float(found[1]) > 0)


def _check_options(
    out: str | os.PathLike[str], *, device: str, gpus: int, replicas: int, max_replicas: int,
    port: int, text: dict[str, str | None]
) -> None:  # fmt: skip
    """Refuse what Kubernetes or docker would refuse later, and an ``out`` that is a file."""
    if device not in ("cpu", "cuda"):
        raise SettingsError(f"device must be cpu or cuda, got {device!r}")
    if not 1 <= replicas <= max_replicas:
        raise SettingsError(f"need 1 <= replicas <= max_replicas, got {replicas}, {max_replicas}")
    if device == "cuda" and gpus < 1:
        raise SettingsError(f"gpus must be >= 1 with device cuda, got {gpus}")
    if not 1 <= port <= 65535:
        raise SettingsError(f"port must be between 1 and 65535, got {port}")
    if Path(out).exists() and not Path(out).is_dir():
        raise SettingsError(f"--out {out} is a file: give a folder to write (new or existing)")
    for what, value, pattern, example in (
        ("cpu", text["cpu"], _QUANTITY, "1, 500m or 2.5"),
        ("memory", text["memory"], _QUANTITY, "2Gi or 512Mi"),
        ("image", text["image"], _IMAGE, "registry.example/flights:1"),
        ("namespace", text["namespace"], _LABEL, "ml-serving (a DNS-1123 label)"),
    ):
        if value is not None and not _valid(value, pattern):
            raise SettingsError(f"--{what} {value!r} is not valid: give one like {example}")


def _memory_for(model_bytes: int) -> str:
    """Twice the weights (loaded copy + warm-up buffers) plus 768 MiB for Python and torch."""
    mib = math.ceil((2 * model_bytes + (768 << 20)) / (256 << 20)) * 256
    return f"{mib}Mi"


class _NoAliases(yaml.SafeDumper):
    """Writes a value shared by two places twice, never as a YAML anchor and alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _auth_env(token_secret: str | None) -> dict[str, Any]:
    """The server's token from key ``token`` of the Secret ``token_secret``; None: insecure."""
    if token_secret is None:
        return {"name": "CAUCE_SERVE_INSECURE", "value": "1"}
    secret = {"name": token_secret, "key": "token"}
    return {"name": "CAUCE_SERVE_TOKEN", "valueFrom": {"secretKeyRef": secret}}


def _resources(device: str, gpus: int, cpu: str, memory: str) -> dict[str, Any]:
    resources: dict[str, Any] = {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"memory": memory},
    }
    if device == "cuda":
        resources["limits"]["nvidia.com/gpu"] = gpus
    return resources


def _probe(path: str, port: int | str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _server_env(port: int, device: str, grace_s: int, token_secret: str | None) -> list[Any]:
    return [
        {"name": "CAUCE_SERVE_HOST", "value": "0.0.0.0"},
        {"name": "CAUCE_SERVE_PORT", "value": str(port)},
        {"name": "CAUCE_SERVE_DEVICE", "value": device},
        {"name": "CAUCE_SERVE_GRACE_S", "value": str(grace_s)},
        _auth_env(token_secret),
    ]


@dataclass(frozen=True)
class Pods:
    """How the packaged server runs on Kubernetes: the options of ``cauce package`` that the
    manifests of either kind (Deployment and friends, or a KServe InferenceService) carry."""

    image: str
    device: str
    gpus: int
    replicas: int
    max_replicas: int
    cpu: str
    memory: str
    port: int
    namespace: str | None
    grace_s: int = 30
    token_secret: str | None = None


_SECURITY = {"allowPrivilegeEscalation": False, "runAsNonRoot": True}
_GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def manifests(spec: ModelSpec, pods: Pods) -> dict[str, dict[str, Any]]:
    """The Deployment, Service and HorizontalPodAutoscaler, by file name. The server's token
    comes from key ``token`` of the Secret ``token_secret``; ``None``: no token (insecure)."""
    name = _k8s_name(f"cauce-{spec.name}")
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "model-server"}
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if pods.namespace:
        meta["namespace"] = pods.namespace
    pod_extra: dict[str, Any] = {}
    if pods.device == "cuda":
        pod_extra["tolerations"] = [dict(_GPU_TOLERATION)]
    container = {
        "name": "server",
        "image": pods.image,
        "ports": [{"name": _PORT_NAME, "containerPort": pods.port, "protocol": "TCP"}],
        "env": _server_env(pods.port, pods.device, pods.grace_s, pods.token_secret),
        "resources": _resources(pods.device, pods.gpus, pods.cpu, pods.memory),
        "readinessProbe": _probe("/v2/health/ready", _PORT_NAME, 5, 3),
        "livenessProbe": {**_probe("/v2/health/live", _PORT_NAME, 10, 3), "initialDelaySeconds": 5},
        "startupProbe": _probe("/v2/health/live", _PORT_NAME, 2, 30),
        # Endpoints are updated asynchronously: keep serving a moment after SIGTERM is due.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        "securityContext": dict(_SECURITY),
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": pods.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(pods.port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "containers": [container],
                    "terminationGracePeriodSeconds": pods.grace_s + 15,
                    **pod_extra,
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [{"name": _PORT_NAME, "port": pods.port, "targetPort": _PORT_NAME}],
        },
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": pods.replicas,
            "maxReplicas": pods.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }
    return {"deployment.yaml": deployment, "service.yaml": service, "hpa.yaml": hpa}


def inference_service(spec: ModelSpec, pods: Pods) -> dict[str, Any]:
    """A KServe ``InferenceService`` (serving.kserve.io/v1beta1) whose predictor is the image as
    a custom container speaking the Open Inference Protocol (``PROTOCOL=v2``, which KServe reads
    from the first container's env). Knative, under KServe's serverless mode, accepts neither a
    ``lifecycle`` nor a port named other than ``http1``/``h2c``: the container has neither, and
    its probes name the port by number."""
    name = _k8s_name(f"cauce-{spec.name}")
    meta: dict[str, Any] = {
        "name": name,
        "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "model-server"},
        "annotations": {
            "model.cauce.dev/name": spec.name,
            "model.cauce.dev/version": str(spec.version),
            "serving.kserve.io/enable-prometheus-scraping": "true",
            "prometheus.kserve.io/port": str(pods.port),
            "prometheus.kserve.io/path": "/metrics",
        },
    }
    if pods.namespace:
        meta["namespace"] = pods.namespace
    container = {
        "name": "kserve-container",
        "image": pods.image,
        "ports": [{"containerPort": pods.port, "protocol": "TCP"}],
        "env": [
            *_server_env(pods.port, pods.device, pods.grace_s, pods.token_secret),
            {"name": "PROTOCOL", "value": "v2"},
        ],
        "resources": _resources(pods.device, pods.gpus, pods.cpu, pods.memory),
        "readinessProbe": _probe("/v2/health/ready", pods.port, 5, 3),
        # No startup probe under Knative: the liveness probe waits for the model to load.
        "livenessProbe": {**_probe("/v2/health/live", pods.port, 10, 6), "initialDelaySeconds": 10},
        "securityContext": dict(_SECURITY),
    }
    predictor: dict[str, Any] = {
        "minReplicas": pods.replicas,
        "maxReplicas": pods.max_replicas,
        "scaleMetric": "cpu",
        "scaleTarget": 70,
        "containers": [container],
    }
    if pods.device == "cuda":
        predictor["tolerations"] = [dict(_GPU_TOLERATION)]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": meta,
        "spec": {"predictor": predictor},
    }


def package(
    model_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    image: str | None = None,
    device: str = "cpu",
    gpus: int = 1,
    replicas: int = 1,
    max_replicas: int = 4,
    cpu: str = "1",
    memory: str | None = None,
    port: int = 8080,
    namespace: str | None = None,
    cauce_requirement: str | None = None,
    token_secret: str | None = None,
    insecure: bool = False,
    kserve: bool = False,
) -> list[Path]:
    """Write the Dockerfile, the model and the manifests into ``out``; returns the files.

    The manifests are a Deployment, a Service and a HorizontalPodAutoscaler, or with
    ``kserve=True`` one KServe InferenceService (``k8s/inferenceservice.yaml``) in their place.

    The server needs a token (it listens on 0.0.0.0): the Deployment reads it from key
    ``token`` of the Secret ``token_secret`` (default ``cauce-NAME-token``), which the manifests
    only name; no token is ever written. ``insecure=True`` serves without one.

    Without ``cauce_requirement``, a cauce run from a source checkout puts a wheel of that
    checkout in ``out/wheels/`` and the image installs it; one from a package index has the
    image install ``cauce[serve]`` of the same version.
    """
    import cauce

    spec = read_spec(Path(model_dir))
    if insecure and token_secret:
        raise SettingsError("a token secret and insecure exclude each other: give one")
    if not insecure:
        token_secret = token_secret or _k8s_name(f"cauce-{spec.name}-token")
        if _k8s_name(token_secret) != token_secret:
            raise SettingsError(
                f"token secret must be a Kubernetes name (lowercase letters, digits, '-'), "
                f"got {token_secret!r}"
            )
    _check_options(
        out,
        device=device,
        gpus=gpus,
        replicas=replicas,
        max_replicas=max_replicas,
        port=port,
        text={"cpu": cpu, "memory": memory, "image": image, "namespace": namespace},
    )
    folder = Path(out)
    model_copy = folder / "model"
    if model_copy.exists():
        shutil.rmtree(model_copy)
    (folder / "k8s").mkdir(parents=True, exist_ok=True)
    shutil.copytree(model_dir, model_copy)
    model_bytes = sum(p.stat().st_size for p in model_copy.iterdir() if p.is_file())
    requirement = cauce_requirement or f"cauce[serve]=={cauce.__version__}"
    written = [folder / "Dockerfile", folder / ".dockerignore"]
    shutil.rmtree(folder / "wheels", ignore_errors=True)
    wheel = wheel_into(folder / "wheels") if cauce_requirement is None else None
    if wheel is not None:
        written.append(wheel)
    written[0].write_text(
        dockerfile(
            spec,
            port=port,
            device=device,
            cauce_requirement=requirement,
            wheel=None if wheel is None else wheel.name,
        ),
        encoding="utf-8",
    )
    written[1].write_text("*\n!model/\n!wheels/\n", encoding="utf-8")
    pods = Pods(
        image=image or f"cauce-{_k8s_name(spec.name)}:{spec.version}",
        device=device,
        gpus=gpus,
        replicas=replicas,
        max_replicas=max_replicas,
        cpu=cpu,
        memory=memory or _memory_for(model_bytes),
        port=port,
        namespace=namespace,
        token_secret=None if insecure else token_secret,
    )
    if kserve:
        docs = {"inferenceservice.yaml": inference_service(spec, pods)}
    else:
        docs = manifests(spec, pods)
    for stale in ("deployment.yaml", "service.yaml", "hpa.yaml", "inferenceservice.yaml"):
        (folder / "k8s" / stale).unlink(missing_ok=True)  # from a package of the other kind
    for file_name, doc in docs.items():
        path = folder / "k8s" / file_name
        path.write_text(yaml.dump(doc, Dumper=_NoAliases, sort_keys=False), encoding="utf-8")
        written.append(path)
    return written
