"""Every Accelerate config under recipes/configs/accelerate parses with Accelerate's own loader, names only
options ``accelerate launch`` knows, goes through the launcher's own validation (nothing is launched), and
starts with comments saying when to use it and the exact launch command."""
from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "recipes" / "configs" / "accelerate"
CONFIGS = sorted(FOLDER.glob("*.yaml"))
REQUIRED = {"cpu_2proc", "multi_gpu", "multi_node", "fsdp", "deepspeed"}


def header(path: Path) -> str:
    """The comment lines at the top of ``path``."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def test_the_documented_configs_exist():
    assert REQUIRED <= {path.stem for path in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_names_only_known_launch_options(path):
    config = load_config_from_file(str(path))
    options = {action.dest for action in launch_command_parser()._actions}
    for section, prefix in (("fsdp_config", "fsdp_"), ("deepspeed_config", "")):
        for key in getattr(config, section):
            name = key if key.startswith(prefix) else prefix + key
            assert name in options, f"{path.name}: {section}.{key} is not an `accelerate launch` option"
    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    args, _, _ = _validate_launch_command(args)  # what `accelerate launch` does with the file before launching
    assert args.num_processes == config.num_processes >= 2
    text = header(path)
    assert "accelerate launch" in text and f"--config_file recipes/configs/accelerate/{path.name}" in text, path.name
    assert len(text.splitlines()) >= 3, f"{path.name}: say when to use it, and how"


def test_each_config_sets_what_its_name_promises():
    configs = {path.stem: load_config_from_file(str(path)) for path in CONFIGS}
    cpu = configs["cpu_2proc"]
    assert cpu.distributed_type == DistributedType.MULTI_GPU and cpu.num_processes == 2 and cpu.use_cpu
    assert "ACCELERATE_USE_CPU=1 accelerate launch --config_file" in header(FOLDER / "cpu_2proc.yaml")
    gpus = configs["multi_gpu"]
    assert gpus.distributed_type == DistributedType.MULTI_GPU and gpus.num_machines == 1 and gpus.gpu_ids == "all"
    nodes = configs["multi_node"]
    assert (nodes.num_machines, nodes.num_processes, nodes.machine_rank) == (2, 16, 0)
    assert nodes.main_process_ip and nodes.main_process_port
    assert "--machine_rank 1" in header(FOLDER / "multi_node.yaml")
    fsdp = configs["fsdp"]
    assert fsdp.distributed_type == DistributedType.FSDP
    assert fsdp.fsdp_config["fsdp_sharding_strategy"] in ("FULL_SHARD", "SHARD_GRAD_OP")
    assert fsdp.fsdp_config["fsdp_auto_wrap_policy"] == "SIZE_BASED_WRAP"
    assert fsdp.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert fsdp.fsdp_config["fsdp_use_orig_params"] is True  # the optimizer's parameter groups survive wrapping
    deepspeed = configs["deepspeed"]
    assert deepspeed.distributed_type == DistributedType.DEEPSPEED and deepspeed.mixed_precision == "bf16"
    ds = deepspeed.deepspeed_config
    assert ds["zero_stage"] == 2 and ds["offload_optimizer_device"] == ds["offload_param_device"] == "none"
