"""The app's work, without Gradio: `DiffusionService` (service.py) and the server's limits
(settings.py), the visitor's session and the loaded models (models.py), Hub pulls (pulls.py),
request checks (requests.py), results (results.py), pictures (images.py), untrusted text (text.py).

app.py lays out the page and wires each event to one method of the service.
"""
from .models import Session
from .results import BackendRun, CompareResult, GenerateResult
from .service import DiffusionService
from .settings import ServerSettings, ServiceError

__all__ = ["BackendRun", "CompareResult", "DiffusionService", "GenerateResult", "ServerSettings",
           "ServiceError", "Session"]
