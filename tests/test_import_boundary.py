"""Only ``sdconet/d2/`` (and the d2 entry point train_net.py) may import detectron2."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "projects" / "SDCoNet" / "sdconet"
ALLOWED = {PACKAGE / "d2", REPO / "projects" / "SDCoNet" / "train_net.py"}


def _imported_roots(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0], node.lineno


def _is_allowed(path: Path) -> bool:
    return any(path == a or a in path.parents for a in ALLOWED)


def test_package_exists():
    files = list(PACKAGE.rglob("*.py"))
    assert len(files) > 5, "the sdconet package should contain modules"


def test_only_d2_imports_detectron2():
    offenders = []
    roots = [PACKAGE, REPO / "tools", REPO / "datasets", REPO / "projects" / "SDCoNet"]
    seen = set()
    for root in roots:
        for path in root.rglob("*.py"):
            if path in seen or _is_allowed(path):
                continue
            seen.add(path)
            for mod, line in _imported_roots(path):
                if mod == "detectron2":
                    offenders.append(f"{path.relative_to(REPO)}:{line}")
    assert not offenders, "detectron2 imported outside sdconet/d2/: " + ", ".join(offenders)


def test_boundary_checker_detects_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom detectron2.structures import Instances\n")
    assert ("detectron2", 2) in list(_imported_roots(bad))
