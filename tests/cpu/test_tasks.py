"""The task-type registry: one task type per name, one lowering per op kind, a header per
CUDA binding that the aggregate header includes, every lowered grid registered, and the
GPU template test generated from the registry covering every task type and compiling."""
from pathlib import Path

import pytest

import eventkernel.cuda.codegen as codegen
from eventkernel.compiler import lower_model
from eventkernel.cuda.compile import compile_cuda, nvrtc_available
from eventkernel.ir.graph import OpKind
from eventkernel.lower import Target, lower
from eventkernel.models.config import Limits, ModelConfig
from eventkernel.models.presets import preset_config
from eventkernel.tasks import TASK_TYPES, TASKS, lowering_of, task_type
from eventkernel.tasks.cases import registry_cases, registry_template_source

INCLUDE = Path(codegen.__file__).parent / "include"


def test_one_task_type_per_name_and_one_lowering_per_op():
    assert len(TASKS) == len(TASK_TYPES)
    owners = [t.op for t in TASK_TYPES if t.op is not None]
    assert sorted(owners, key=lambda k: k.value) == sorted(OpKind, key=lambda k: k.value)
    for kind in OpKind:
        assert lowering_of(kind).op is kind


def test_every_header_exists_and_is_aggregated():
    aggregate = (INCLUDE / "tasks" / "tasks.cuh").read_text()
    for t in TASK_TYPES:
        assert (INCLUDE / t.header).is_file(), t.header
        assert f'#include "{Path(t.header).name}"' in aggregate, t.header


def test_unknown_names_say_what_is_registered():
    with pytest.raises(KeyError, match="registered: embedding"):
        task_type("conv2d")


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen3", "tiny-qwen3-moe"])
def test_every_lowered_grid_has_a_binding(preset):
    program = lower_model(ModelConfig.from_hf(preset_config(preset)),
                          Limits(max_tokens=64, max_seqs=8, max_context=4096),
                          Target(num_workers=132))[1]
    for grid in program.grids:
        template, fields = codegen.instantiate(grid, program)
        assert template.endswith(">") and fields, grid.name
        assert all((f.tensor is None) != (f.value is None) for f in fields), grid.name


def test_template_cases_cover_every_task_type():
    _, kernels = registry_template_source()
    tested = {k.template.split("<")[0] for ks in kernels.values() for k in ks}
    names = [c.name for c in registry_cases()]
    assert len(names) == len(set(names))
    for t in TASK_TYPES:
        cases = [c for c in registry_cases()
                 for g in lower(c.graph, c.target).grids if g.task_type == t.name]
        assert cases, f"no GPU template case lowers to a {t.name} grid"
    assert {"LinearTask", "GemvTask", "GemvMmaTask", "AttentionMergeTask"} <= tested


@pytest.mark.skipif(not nvrtc_available(), reason="cuda-bindings with NVRTC 13 not installed")
def test_template_test_source_compiles_for_sm90a(tmp_path):
    """The GPU template test's whole source (tests/gpu/test_task_templates.py), here."""
    source, _ = registry_template_source()
    compiled = compile_cuda(source, cache_dir=tmp_path, name="task_templates")
    assert compiled.cubin[:4] == b"\x7fELF"
