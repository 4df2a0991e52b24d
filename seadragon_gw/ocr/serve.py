"""Run the OCR app under uvicorn until it is stopped (SIGTERM, SIGINT) or its models fail to load."""

from __future__ import annotations

import uvicorn

from .server import OcrService, OcrSettings, build_app


def serve(host: str, port: int, det_limit: int, model_name: str, threads: int, max_pixels: int) -> int:
    """Exit code: 0 when stopped, 1 when the models could not load."""
    service = OcrService(OcrSettings(model_name=model_name, det_limit=det_limit, threads=threads,
                                     max_pixels=max_pixels))
    server: uvicorn.Server | None = None

    def stop() -> None:
        assert server is not None
        server.should_exit = True

    app = build_app(service, on_failed=stop)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           lifespan="on"))
    server.run()
    return 1 if service.failed is not None else 0
