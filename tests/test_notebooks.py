"""The notebooks run top to bottom (outputs are not stored in the repository) and check their own results."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import SHARED_DATA

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# a short run of each notebook: its settings come from the environment (every notebook reads SELFVOS_*)
SHORT_RUN = {
    "finetune_custom_video.ipynb": {
        "SELFVOS_VIDEO": str(SHARED_DATA / "videos" / "dog.mp4"),  # its default box is the dog of this clip
        "SELFVOS_END_SECONDS": "0.3", "SELFVOS_ADAPT_MINUTES": "0.5",
        "SELFVOS_ONLINE_STEPS": "3",
    },
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "strip outputs before committing"
    settings = SHORT_RUN.get(path.name, {})
    video = settings.get("SELFVOS_VIDEO")
    if video and not Path(video).is_file():
        pytest.skip(f"{video} not found (set SELFVOS_SHARED_DATA or check out ../shared)")
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    # the notebook uses runs/mug_davis16_cpu/model when the checkout has it (and then checks the propagation);
    # a fresh clone has none and runs its path from random weights
    monkeypatch.setenv("SELFVOS_OUT", str(tmp_path / "out"))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert nb.cells[-1].outputs, "the last cell shows the overlay"
