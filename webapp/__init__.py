"""The app's work, without Gradio: `DiffusionService` (service.py) and the server's limits
(settings.py), the visitor's session and the loaded models (models.py), Hub pulls (pulls.py),
request checks (requests.py), results (results.py), pictures (images.py), untrusted text (text.py).

app.py lays out the page and wires each event to one method of the service.
"""
from diffusion_core.paths import toolkit_backends

toolkit_backends()  # the toolkit's own `backends`, not another project's module of that name

from .models import Session  # noqa: E402
from .results import BackendRun, CompareResult, GenerateResult  # noqa: E402
from .service import DiffusionService  # noqa: E402
from .settings import ServerSettings, ServiceError  # noqa: E402

__all__ = ["BackendRun", "CompareResult", "DiffusionService", "GenerateResult", "ServerSettings",
           "ServiceError", "Session"]
