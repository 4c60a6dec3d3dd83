"""The app's work, without Gradio: `DiffusionService` (service.py), its results (results.py) and
its pictures (images.py).

app.py lays out the page and wires each event to one method of the service.
"""
from .results import BackendRun, CompareResult, GenerateResult
from .service import DiffusionService, ServiceError

__all__ = ["BackendRun", "CompareResult", "DiffusionService", "GenerateResult", "ServiceError"]
