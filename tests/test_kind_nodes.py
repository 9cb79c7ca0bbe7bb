"""Which kind nodes get the images: every node pods may land on, including one still losing its start-up taint."""

from typing import Any

from tests.tooling.kind.cluster import nodes_that_run_pods


def _node(name: str, *taints: tuple[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taints": [{"key": key, "effect": effect} for key, effect in taints]},
    }


CONTROL_PLANE = _node(
    "swell-control-plane",
    ("node-role.kubernetes.io/control-plane", "NoSchedule"),
    labels={"node-role.kubernetes.io/control-plane": ""},
)


def test_a_worker_node_that_still_carries_the_not_ready_taint_gets_the_images() -> None:
    # Seen on a fresh cluster: the node was Ready, the node controller had not yet lifted the taint, the
    # images went to the other worker only, and the vector store landed on this one (ErrImagePull).
    listed = {
        "items": [
            CONTROL_PLANE,
            _node("swell-worker", ("node.kubernetes.io/not-ready", "NoSchedule")),
            _node("swell-worker2"),
        ]
    }
    assert nodes_that_run_pods(listed) == ["swell-worker", "swell-worker2"]


def test_condition_taints_do_not_exclude_a_node_but_the_control_plane_role_and_other_taints_do() -> None:
    listed = {
        "items": [
            CONTROL_PLANE,
            _node(
                "a", ("node.kubernetes.io/unreachable", "NoExecute"), ("node.kubernetes.io/disk-pressure", "NoSchedule")
            ),
            _node("b", ("node.cloudprovider.kubernetes.io/uninitialized", "NoSchedule")),
            _node("c", ("dedicated", "NoSchedule")),
            _node("d", ("dedicated", "PreferNoSchedule")),
        ]
    }
    assert nodes_that_run_pods(listed) == ["a", "b", "d"]


def test_a_single_node_cluster_whose_control_plane_runs_pods_gets_the_images() -> None:
    untainted_control_plane = _node("only", labels={"node-role.kubernetes.io/control-plane": ""})
    assert nodes_that_run_pods({"items": [untainted_control_plane]}) == ["only"]
