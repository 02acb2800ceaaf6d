"""The exporter is its own package (services/gpu_exporter); test it from the source tree."""

import sys
from pathlib import Path

EXPORTER_SRC = Path(__file__).resolve().parents[2] / "services" / "gpu_exporter"
if str(EXPORTER_SRC) not in sys.path:
    sys.path.insert(0, str(EXPORTER_SRC))
