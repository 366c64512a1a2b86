"""``rtsal serve``: the web demo (Gradio) for photos and the browser's camera."""

from __future__ import annotations

from typing import Annotated

import typer

from rtsal.cli._options import (
    AllowOtherBlackBoxOption,
    BackendOption,
    BlackBoxOption,
    CheckpointOption,
    PretrainedOption,
    TrustCodeOption,
    WeightsOption,
)
from rtsal.serve.server import DEFAULT_MAX_UPLOAD_MB

Method = Annotated[
    str,
    typer.Option(help="Explanation method shown first (rtsal methods lists them)."),
]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
Host = Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")]
Port = Annotated[int, typer.Option(help="Port to listen on.")]
MaxUploadMB = Annotated[
    float,
    typer.Option(
        envvar="RTSAL_MAX_UPLOAD_MB",
        help="Largest file a client may upload, in megabytes (0: no limit); larger ones are "
        "refused before rtsal reads them.",
    ),
]


def serve(
    checkpoint: CheckpointOption = None,
    blackbox: BlackBoxOption = None,
    method: Method = "masker",
    device: Device = "auto",
    backend: BackendOption = "auto",
    host: Host = "127.0.0.1",
    port: Port = 7860,
    weights: WeightsOption = None,
    pretrained: PretrainedOption = True,
    max_upload_mb: MaxUploadMB = DEFAULT_MAX_UPLOAD_MB,
    trust_code: TrustCodeOption = False,
    allow_other_black_box: AllowOtherBlackBoxOption = False,
) -> None:
    """Serve the web demo: photos and the camera explained in the browser, top-5 classes, any
    class by name, the mask, overlay, box and the (image x mask, image x (1 - mask)) pair, the
    methods side by side, and an API for gradio_client (needs Gradio: rtsal's serve extra)."""
    from rtsal.serve.server import serve as run

    run(
        checkpoint=checkpoint,
        black_box=blackbox,
        method=method,
        device=device,
        backend=backend,
        host=host,
        port=port,
        weights=weights,
        pretrained=pretrained,
        max_upload_mb=max_upload_mb,
        trust_code=trust_code,
        allow_other_black_box=allow_other_black_box,
    )


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
