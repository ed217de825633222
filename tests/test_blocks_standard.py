"""Every opsflow Block passes Prefect's own standard checks for blocks: a description, a
documentation URL, a description on every field (ending with a period) and a code example
that imports the block and loads it by name (what the UI shows an operator)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite

import blocks


def _opsflow_blocks() -> list[type[Block]]:
    """Every Block class defined in a module of blocks/ (imported ones are not ours)."""
    found: dict[str, type[Block]] = {}
    for module_info in pkgutil.iter_modules(blocks.__path__):
        module = importlib.import_module(f"blocks.{module_info.name}")
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, Block)
                    and value.__module__ == module.__name__):
                found[name] = value
    return [found[name] for name in sorted(found)]


BLOCKS = _opsflow_blocks()


def test_every_module_of_blocks_is_covered() -> None:
    assert {b.__name__ for b in BLOCKS} >= {
        "BookletConfig", "BookletResults", "License", "LocalFolder", "SftpServer",
        "SmtpServer", "SyncMapping"}


class TestOpsflowBlocks(BlockStandardTestSuite):
    @pytest.fixture(params=BLOCKS, ids=[b.__name__ for b in BLOCKS])
    def block(self, request: pytest.FixtureRequest) -> type[Block]:
        return request.param
