"""The page of the web demo: :func:`build_app` lays out what a
:class:`~rtsal.serve.app.SaliencyDemo` shows (tabs Photo, Camera and Methods side by side) with
Gradio, imported here alone, and names the API endpoints ``gradio_client`` calls."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from rtsal.errors import RtsalError
from rtsal.inference.explainer import slug
from rtsal.serve._gradio import import_gradio
from rtsal.serve.app import (
    PAPER_THRESHOLD,
    TOP1,
    TOPK,
    FrameRate,
    SaliencyDemo,
    mask_picture,
    method_label,
    overlay_picture,
    pair_pictures,
    summary_markdown,
)
from rtsal.serve.uploads import Uploads, read_upload, upload_path

# The browser sends the next camera frame once the previous one is answered, and tries every
# STREAM_EVERY seconds: the frame rate is set by the round trip, up to 1 / STREAM_EVERY (20).
# Each try draws the camera into a canvas, even while waiting, which costs the browser CPU: on
# 2 cores shared with the server, headless Chromium took about 1.3 cores trying every 30 ms,
# 1.2 every 50 ms and 1.0 every 100 ms (docs/performance.md).
STREAM_EVERY = 0.05
CACHE_CLEANUP = (300, 900)  # every 5 minutes, Gradio deletes the files it made over 15 min ago


INTRO = """# rtsal: real-time saliency
Drop a photo, pick an example or open the camera: the masking model (Dabkowski & Gal, 2017)
shows what the black box looks at, for any class, in one forward pass."""


def build_app(
    demo: SaliencyDemo,
    *,
    workdir: Path,
    examples: Sequence[Path] = (),
    uploads: Uploads | None = None,
) -> Any:
    """The page (a ``gradio.Blocks``) for ``demo``: tabs Photo, Camera and Methods side by
    side, and the named API endpoints ``/explain`` (image, class name[, method]) -> (mask PNG,
    numbers) and ``/classes`` (query) -> matching classes. The camera's stream serves the page
    only: it is not offered as an API (``gradio_client`` cannot send a stream).

    Uploaded photos reach the code unprocessed (``preprocess=False``) and are read by
    :func:`~rtsal.serve.uploads.read_upload`, as ``rtsal explain`` reads files: a file that is
    not an image, is broken or is above ``RTSAL_MAX_PIXELS`` (checked before decoding) is one
    line to the caller, and so is an unknown class or method; none prints a traceback in the
    server's log. A file sent to ``/explain`` is deleted once explained (``uploads``, which
    counts what was uploaded); a photo on the page stays while the page shows it (Gradio's
    sweep deletes it after :data:`CACHE_CLEANUP`). Masks offered for download are written
    under ``workdir``."""
    gr = import_gradio()
    choices = demo.choices()
    method_choices = [(method_label(m), m) for m in demo.compared]
    downloads = workdir / "masks"

    def refused(exc: RtsalError) -> Exception:
        """One line to the caller and none in the log: a user's mistake, not the server's."""
        return gr.Error(str(exc), print_exception=False)

    def resolve(selector: Any) -> int | None:
        try:
            return demo.class_index(selector)
        except RtsalError as exc:
            raise refused(exc) from None

    def read(payload: Any) -> Image.Image:
        try:
            return read_upload(payload)
        except RtsalError as exc:
            raise refused(exc) from None

    def explain_photo(payload, selector, method, threshold):
        if upload_path(payload) is None:
            empty = gr.Image(value=None)
            return {}, "", None, None, empty, empty, gr.DownloadButton(value=None), None
        image = read(payload)
        try:
            result = demo.explain(image, resolve(selector), method)
        except RtsalError as exc:
            raise refused(exc) from None
        e = result.explanation
        kept, removed = pair_pictures(result.image, e.mask)
        mask = mask_picture(e.mask)
        folder = Path(tempfile.mkdtemp(dir=downloads))
        path = folder / f"{slug(e.class_name)}.{e.class_index}.mask.png"
        mask.save(path)
        top = {demo.labels[i]: p for i, p in result.top}
        return (
            top,
            summary_markdown(result, threshold),
            mask,
            overlay_picture(result.image, e.mask, threshold),
            gr.Image(value=kept, label=f"image × mask: p = {e.p_preserved:.3f}"),
            gr.Image(value=removed, label=f"image × (1 − mask): p = {e.p_destroyed:.3f}"),
            gr.DownloadButton(value=str(path)),
            result,
        )

    def redraw(result, threshold):
        if result is None:
            return None, ""
        picture = overlay_picture(result.image, result.mask, threshold)
        return picture, summary_markdown(result, threshold)

    def compare(payload, selector):
        if upload_path(payload) is None:
            return [None, ""] * len(demo.compared)
        out: list[Any] = []
        for method, result in demo.compare(read(payload), resolve(selector)):
            if isinstance(result, str):
                out += [None, f"**{method_label(method)}**: {result}"]
                continue
            e = result.explanation
            out += [
                overlay_picture(result.image, e.mask),
                f"**{method_label(method)}**, {1000 * result.seconds:.0f} ms: "
                f"{e.class_name}, f_c(X·M) = {e.p_preserved:.3f}, "
                f"f_c(X·(1−M)) = {e.p_destroyed:.3f}, area {e.area:.3f}",
            ]
        return out

    def live(frame, selector, rate):
        rate = rate or FrameRate()  # one per page: its own frames per second
        if frame is None:
            return None, "", rate
        note = ""
        try:
            target = demo.class_index(selector)
        except RtsalError as exc:
            target, note = None, f" ({exc}: showing the top-1 class)"
        f = demo.live(frame, target)
        fps = rate.tick()
        (h, w), (oh, ow) = frame.shape[:2], f.overlay.shape[:2]
        size = f"{w}×{h}" if (h, w) == (oh, ow) else f"{w}×{h} shown at {ow}×{oh}"
        info = (
            f"**{f.class_name}** p = {f.probability:.3f}{note} · **{fps:.1f} frames/s** · "
            f"model {1000 * f.model_seconds:.0f} ms, overlay "
            f"{1000 * (f.seconds - f.model_seconds):.0f} ms a frame · camera {size} · "
            f"frame {rate.frames}"
        )
        return f.overlay, info, rate

    def explain_api(payload, class_name, method):
        """(image, class name) -> (mask PNG, numbers). An empty class name explains the top-1
        class; method defaults to the server's. The uploaded file is deleted once used."""
        if upload_path(payload) is None:
            raise gr.Error("no image", print_exception=False)
        try:
            image = read_upload(payload)
            result = demo.explain(image, resolve(class_name), method or demo.method)
        except RtsalError as exc:
            raise refused(exc) from None
        finally:
            if uploads is not None:
                uploads.release(upload_path(payload))
        numbers = result.numbers()
        numbers["top5"] = [
            {"class_index": i, "class_name": demo.labels[i], "p": p} for i, p in result.top
        ]
        return mask_picture(result.mask), numbers

    def classes_api(query):
        """Classes whose name, synonym or synset matches the query."""
        return [
            {"class_index": i, "class_name": demo.labels[i], "synonyms": list(demo.synonyms[i])}
            for i in demo.search(query or "")
        ]

    downloads.mkdir(parents=True, exist_ok=True)
    with gr.Blocks(
        title="rtsal: real-time saliency", analytics_enabled=False, delete_cache=CACHE_CLEANUP
    ) as app:
        gr.Markdown(INTRO)
        with gr.Tabs():
            with gr.Tab("Photo", id="photo"):
                with gr.Row():
                    with gr.Column(scale=2):
                        photo = gr.Image(
                            type="filepath",  # unused: its events take the file unprocessed
                            sources=["upload", "clipboard"],
                            label="Photo",
                            elem_id="photo",
                            height=340,
                        )
                        picker = gr.Dropdown(
                            choices,
                            value=TOP1,
                            label="Class",
                            info="Type a name, a synonym or a synset (n02124075).",
                            allow_custom_value=True,
                            filterable=True,
                            elem_id="class",
                        )
                        method = gr.Radio(
                            method_choices, value=demo.method, label="Method", elem_id="method"
                        )
                        threshold = gr.Slider(
                            0.0,
                            1.0,
                            value=PAPER_THRESHOLD,
                            step=0.01,
                            label="Box threshold (the paper's: 0.5)",
                            elem_id="threshold",
                        )
                        if examples:
                            gr.Examples(
                                [[str(p)] for p in examples],
                                inputs=[photo],
                                label="Example photos (the quickstart's)",
                                examples_per_page=len(examples),
                            )
                    with gr.Column(scale=3):
                        top = gr.Label(num_top_classes=TOPK, label="Top-5 classes", elem_id="top5")
                        with gr.Row():
                            mask_out = gr.Image(
                                label="mask", format="png", elem_id="mask", interactive=False
                            )
                            overlay_out = gr.Image(
                                label="overlay and box",
                                format="png",
                                elem_id="overlay",
                                interactive=False,
                            )
                        with gr.Row():
                            kept_out = gr.Image(
                                label="image × mask",
                                format="png",
                                elem_id="preserved",
                                interactive=False,
                            )
                            removed_out = gr.Image(
                                label="image × (1 − mask)",
                                format="png",
                                elem_id="destroyed",
                                interactive=False,
                            )
                        summary = gr.Markdown(elem_id="summary")
                        download = gr.DownloadButton("Download the mask (PNG)", elem_id="download")
                result = gr.State(None)
            with gr.Tab("Camera", id="camera"):
                with gr.Row():
                    camera = gr.Image(
                        sources=["webcam"],
                        streaming=True,
                        # a selfie view: the frames sent are mirrored as the preview is
                        webcam_options=gr.WebcamOptions(mirror=True),
                        type="numpy",
                        label="Camera",
                        elem_id="camera",
                    )
                    live_out = gr.Image(
                        label="overlay", format="jpeg", elem_id="live", interactive=False
                    )
                live_picker = gr.Dropdown(
                    choices,
                    value=TOP1,
                    label="Class",
                    allow_custom_value=True,
                    filterable=True,
                    elem_id="live-class",
                )
                live_info = gr.Markdown(elem_id="live-info")
                rate = gr.State(None)
            with gr.Tab("Methods side by side", id="compare") as compare_tab:
                gr.Markdown("The photo and class of the Photo tab, explained by each method.")
                compare_button = gr.Button("Compare", elem_id="compare-button")
                compared: list[Any] = []
                with gr.Row():
                    for m in demo.compared:
                        with gr.Column():
                            compared.append(
                                gr.Image(
                                    label=method_label(m),
                                    format="png",
                                    elem_id=f"compare-{m}",
                                    interactive=False,
                                )
                            )
                            compared.append(gr.Markdown(elem_id=f"compare-{m}-numbers"))
        with gr.Row(visible=False):  # the API's own inputs and outputs
            api_image = gr.Image(type="filepath", label="image")  # read by read_upload
            api_class = gr.Textbox(label="class_name", value="")
            api_method = gr.Textbox(label="method", value=demo.method)
            api_mask = gr.Image(format="png", label="mask")
            api_numbers = gr.JSON(label="numbers")
            api_query = gr.Textbox(label="query")
            api_matches = gr.JSON(label="classes")
            api_explain = gr.Button()
            api_search = gr.Button()

        photo_outputs = [top, summary, mask_out, overlay_out, kept_out, removed_out, download]
        gr.on(
            [photo.change, picker.change, method.change],
            explain_photo,
            inputs=[photo, picker, method, threshold],
            outputs=[*photo_outputs, result],
            trigger_mode="always_last",
            api_visibility="private",
            preprocess=False,  # the photo is read by rtsal (read_upload), not decoded by Gradio
        )
        threshold.change(
            redraw,
            inputs=[result, threshold],
            outputs=[overlay_out, summary],
            show_progress="hidden",
            trigger_mode="always_last",
            api_visibility="private",
        )
        gr.on(
            [compare_button.click, compare_tab.select],
            compare,
            inputs=[photo, picker],
            outputs=compared,
            api_visibility="private",
            preprocess=False,
        )
        camera.stream(
            live,
            inputs=[camera, live_picker, rate],
            outputs=[live_out, live_info, rate],
            stream_every=STREAM_EVERY,
            time_limit=None,
            concurrency_limit=1,
            show_progress="hidden",
            api_visibility="private",  # the page's camera only: gradio_client cannot stream
        )
        api_explain.click(
            explain_api,
            inputs=[api_image, api_class, api_method],
            outputs=[api_mask, api_numbers],
            api_name="explain",
            preprocess=False,
        )
        api_search.click(classes_api, inputs=[api_query], outputs=[api_matches], api_name="classes")
    return app
