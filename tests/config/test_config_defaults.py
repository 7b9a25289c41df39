"""Every default is pinned here: changing one is a decision, made in this file too."""

from __future__ import annotations

from agent.config import models


def test_every_default_is_pinned() -> None:
    assert models.Settings().model_dump(mode="json") == {
        "server": {
            "role": "full",
            "metrics_address": "127.0.0.1:9102",
            "socket_path": "/run/runner-agent/api.sock",
            "socket_group": None,
            "api_tcp_address": None,
            "webhook_address": None,
            "job_token_file": None,
            "admin_token_file": None,
            "max_request_bytes": 1048576,
            "shutdown_grace_seconds": 20.0,
            "config_poll_seconds": 2.0,
            "idle_timeout_seconds": 60.0,
            "header_timeout_seconds": 10.0,
            "body_timeout_seconds": 30.0,
            "max_connections": 1024,
            "fd_reserve": 256,
        },
        "cache": {
            "root": "/var/lib/runner-agent/store",
            "size_budget": 53687091200,
            "min_free_bytes": 1073741824,
            "lock_backend": "posix",
            "lease_seconds": 30.0,
            "janitor_interval_seconds": 600.0,
        },
        "catalog": {"bundled": True, "paths": []},
        "features": {"profiles": {}, "environment": None, "preinstall": []},
        "installer": {
            "mirrors": {},
            "lock_timeout_seconds": 900.0,
            "download_attempts": 4,
            "stall_timeout_seconds": 30.0,
            "http_proxy": None,
            "https_proxy": None,
            "no_proxy": None,
            "pip_index_url": None,
            "pip_indexes": {},
            "npm_registry": None,
            "connect_timeout_seconds": 10.0,
            "mirror_headers": {},
            "version_index_ttl_seconds": 3600.0,
            "netrc": None,
            "ca_bundle": None,
            "parallelism": 2,
            "step_timeout_seconds": 900.0,
            "script_isolation": "sandbox",
            "script_user": None,
            "script_uid_range": "2000000000-2000065535",
            "script_max_processes": 1024,
            "script_network": "host",
            "max_entry_bytes": 34359738368,
            "script_remote_user": "runner",
            "system_packages": "runner",
            "package_cache": None,
            "index_refresh_seconds": 3600.0,
            "package_lock_timeout_seconds": 300,
        },
        "logging": {"format": "json", "level": "info"},
        "runner": {
            "labels": [],
            "names": [],
            "max_open_jobs": 64,
            "job_max_seconds": 21600.0,
            "history": 100,
            "policy": [],
            "allowed_features": None,
            "shutdown_wait_seconds": 300.0,
        },
        "upstream": {"socket_path": None, "token_file": None, "poll_seconds": 1.0},
        "github": {
            "api_url": "https://api.github.com",
            "token_file": None,
            "app_id": None,
            "client_id": None,
            "installation_id": None,
            "private_key_file": None,
            "request_timeout_seconds": 10.0,
            "max_attempts": 4,
            "webhook_secret_file": None,
            "webhook_max_bytes": 1048576,
            "scale_sets": {},
            "prewarm_queue": 64,
        },
        "gpu": {
            "backend": "auto",
            "scrape_deadline_seconds": 0.25,
            "collect_interval_seconds": 1.0,
            "slow_interval_seconds": 15.0,
            "devices": [],
            "application_xids": [13, 31, 43, 45, 68, 109],
            "ecc_threshold": 0,
            "drain_runner": False,
            "drain_process": "Runner.Listener",
            "state_file": None,
            "fake": {
                "gpus": 1,
                "trace": "replay",
                "offset_seconds": 0.0,
                "not_supported": [],
                "mig": [],
                "lost": [],
                "xids": [],
                "ecc": [],
                "events": True,
            },
        },
        "kubernetes": {
            "annotate_pod": False,
            "api_url": None,
            "token_file": "/var/run/secrets/kubernetes.io/serviceaccount/token",
            "ca_file": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
            "namespace": None,
            "pod_name": None,
            "annotation_prefix": "runner-agent/",
            "request_timeout_seconds": 10.0,
            "max_attempts": 6,
        },
        "services": {},
    }


def test_every_field_is_documented() -> None:
    def walk(model: type[models.BaseModel], prefix: str = "") -> list[str]:
        undocumented = []
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, models.BaseModel):
                undocumented += walk(annotation, f"{prefix}{name}.")
            elif not field.description or len(field.description) < 30:
                undocumented.append(prefix + name)
        return undocumented

    assert walk(models.Settings) == []


def test_restart_required_fields_are_the_listeners_and_the_store() -> None:
    assert models.restart_required_paths() == [
        "server.role",
        "server.metrics_address",
        "server.socket_path",
        "server.socket_group",
        "server.api_tcp_address",
        "server.webhook_address",
        "server.shutdown_grace_seconds",
        "server.idle_timeout_seconds",
        "server.header_timeout_seconds",
        "server.max_connections",
        "server.fd_reserve",
        "cache.root",
        "cache.lock_backend",
        "upstream.socket_path",
        "gpu.backend",
        "gpu.state_file",
        "gpu.fake",
        "kubernetes.annotate_pod",
    ]
