"""tf.distribute for training: the strategy of `distribution.strategy`, logical CPU devices, the chief."""

import json
import os
from typing import Optional

import tensorflow as tf

from bfcnn.errors import ConfigError


def _check_tf_config(text: str) -> None:
    """ConfigError unless TF_CONFIG is JSON with a cluster and a task that lies in it."""
    try:
        spec = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"TF_CONFIG is not JSON ({error}); expected e.g. "
                          '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", '
                          '"index": 0}}') from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ConfigError("TF_CONFIG needs a 'cluster' mapping (job name -> list of host:port) and a 'task' "
                          "({'type': job name, 'index': n})")
    members = cluster.get(task.get("type"))
    index = task.get("index", 0)
    if not isinstance(members, list) or not isinstance(index, int) or not 0 <= index < len(members):
        raise ConfigError(f"TF_CONFIG's task {task} is not in its cluster (jobs: "
                          f"{', '.join(f'{job} x{len(v)}' for job, v in cluster.items() if isinstance(v, list))})")


def make_strategy(config) -> tf.distribute.Strategy:
    """The tf.distribute strategy of `distribution.strategy`.

    `mirrored` uses every GPU, or, without GPUs, `distribution.devices` logical CPU devices
    (which must be configured before TensorFlow starts: the CLI does it first thing).
    `multi_worker` reads the cluster from the TF_CONFIG environment variable.
    """
    if config.strategy == "default":
        return tf.distribute.get_strategy()
    if config.strategy == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        if config.devices:
            devices = devices[: config.devices]
        return tf.distribute.MirroredStrategy(devices=devices)
    if config.strategy == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("distribution.strategy 'multi_worker' needs the TF_CONFIG environment variable")
        _check_tf_config(os.environ["TF_CONFIG"])
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"distribution.strategy={config.strategy!r}; allowed: 'default', 'mirrored', 'multi_worker'")


def configure_logical_cpus(devices: Optional[int]) -> None:
    """Splits the CPU into `devices` logical devices (for mirrored training without GPUs)."""
    if not devices or tf.config.list_physical_devices("GPU"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)


def is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)
