"""The review page: trame-slicer views, segmentation job, correction tools, measurement table, exports.

Runs in trame-slicer's environment (``make web`` -> ``.venv-web``). The server is single-user: one case,
one scene. Heavy work (measurements after an edit) runs in a worker thread; VTK/MRML calls stay on the
event loop's thread.
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
import time
from pathlib import Path

from trame.app import TrameApp
from trame.app.asynchronous import create_task
from trame.widgets import html
from trame.widgets import vuetify3 as v3
from trame_slicer.core import LayoutManager, SlicerApp, VolumeWindowLevel
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.segmentation import SegmentationEffectErase, SegmentationEffectPaint
from trame_slicer.segmentation.paint_effect_parameters import BrushDiameterMode
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition
from trame_vuetify.ui.vuetify3 import SinglePageLayout
from undo_stack import UndoStack

from .. import imageio
from ..background import BackgroundProcess
from ..quality import assess
from ..errors import SpineAnalysisError
from ..measurements import write_measurements
from .files import DataFolder, UploadFolder
from .job import job_summary, start_segmentation
from .scene import ReviewScene
from .table import build_table

#: Delay after the last edit before the table is measured again (edits closer together are measured once).
MEASURE_DELAY_S = 0.15
LAYOUT_ID = "review"
SLICE_VIEWS = {"Yellow": "sagittal", "Red": "axial", "Green": "coronal"}


def review_layout() -> Layout:
    """Sagittal view large on the left; axial, coronal and 3D stacked on the right."""
    return Layout(
        LayoutDirection.Horizontal,
        [
            ViewLayoutDefinition.sagittal_view(),
            Layout(LayoutDirection.Vertical, [ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.coronal_view(), ViewLayoutDefinition.threed_view()]),
        ],
        flex_sizes=["2", "1"],
    )


class ReviewApp(TrameApp):
    def __init__(self, server=None, data_dir: str | None = None, device: str = "auto"):
        super().__init__(server)
        self.device = device
        self.data = DataFolder(data_dir)
        self.uploads = UploadFolder()
        self.slicer = SlicerApp()
        register_rca_factories(self.slicer.view_manager, self.server)
        self.layout_manager = LayoutManager(self.slicer.scene, self.slicer.view_manager, self.server)
        self.layout_manager.register_layout(LAYOUT_ID, review_layout())
        self.layout_manager.set_layout(LAYOUT_ID)  # views exist before any brush effect is activated
        self.case = ReviewScene(self.slicer)
        self.editor = self.slicer.segmentation_editor
        self.undo = UndoStack(undo_limit=30)
        self.editor.set_undo_stack(self.undo)
        self.editor.segmentation_modified.connect(self._on_edit)
        self.job: BackgroundProcess | None = None
        self.job_dir: Path | None = None
        self.measurements = []
        self.summary: dict | None = None  # the segmentation job's summary (labelling report), None for loaded labels
        self.quality = assess([], None)
        self._edited_at: float | None = None  # last edit not measured yet
        self._first_edit_at: float | None = None  # first of the edits the next measurement covers
        self._measuring = False
        self._init_state()
        self._build_ui()
        bind_state_changes(self)
        self.server.controller.on_server_ready.add(self._start_loops)
        self.server.controller.on_server_exited.add(self.close)

    # -- state -------------------------------------------------------------------------------------
    def _init_state(self) -> None:
        s = self.state
        s.trame__title = "SpineAnalysis review"
        s.message, s.error = "", ""
        s.case_name = ""
        s.files = self.data.list_images()
        s.selected_file = None
        s.running, s.progress, s.progress_text = False, 0, ""
        s.quality_status, s.quality_reasons, s.warnings = "", [], []
        s.segments, s.active_segment = [], None
        s.tool = "none"
        s.brush_mm = 4.0
        s.window, s.level, s.wl_min, s.wl_max = 0, 0, 0, 1
        s.table_headers, s.table_rows, s.table_version, s.table_state = [], [], 0, ""
        s.edit_to_table_s = None
        s.slice_positions = {}
        s.rename_from, s.rename_to = None, ""
        s.can_undo = s.can_redo = False
        s.dicom_input = False

    def _say(self, message: str = "", error: str = "") -> None:
        self.state.message, self.state.error = message, error

    # -- UI ----------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        ctrl = self.server.controller
        with SinglePageLayout(self.server, full_height=True) as self.ui:
            self.ui.title.set_text("SpineAnalysis review")
            with self.ui.toolbar:
                v3.VSpacer()
                v3.VSelect(v_if="files.length", v_model=("selected_file",), items=("files",), label="image in the data folder",
                           density="compact", hide_details=True, style="max-width: 320px", classes="mx-2")
                v3.VBtn("Open", v_if="files.length", click=self.open_selected, disabled=("!selected_file || running",), id="open-button")
                v3.VFileInput(label="upload an image", multiple=True, density="compact", hide_details=True, style="max-width: 260px",
                              classes="mx-2", change=f"trigger('{ctrl.trigger_name(self.upload)}', [$event.target.files])",
                              disabled=("running",), id="upload-input")
                v3.VBtn("Segment", click=self.start_segmentation, disabled=("!case_name || running",), color="primary", id="segment-button", classes="mx-1")
                v3.VBtn("Cancel", click=self.cancel_segmentation, disabled=("!running",), id="cancel-button", classes="mx-1")
            with self.ui.content:
                with html.Div(style="display: flex; flex-direction: column; height: 100%;"):
                    v3.VProgressLinear(v_if="running", model_value=("progress * 100",), height=6, color="primary")
                    with html.Div(style="padding: 2px 8px; min-height: 24px;"):
                        html.Span("{{ case_name }} ", style="font-weight: bold", id="case-name")
                        html.Span("{{ progress_text }} ", v_if="running", id="progress-text")
                        html.Span("{{ message }}", id="message")
                        html.Span("{{ error }}", id="error", style="color: #d32f2f; font-weight: bold")
                    with html.Div(style="display: flex; flex: 1 1 60%; min-height: 300px;"):
                        with html.Div(style="flex: 1; display: flex; position: relative;", id="views"):
                            self.layout_manager.initialize_layout_grid(self.ui)
                        with html.Div(style="width: 330px; overflow-y: auto; padding: 6px; font-size: 13px;", id="side-panel"):
                            self._build_side_panel()
                    with html.Div(style="flex: 1 1 40%; overflow: auto; border-top: 1px solid #888;", id="table-panel"):
                        self._build_table()

    def _build_side_panel(self) -> None:
        with html.Div(v_if="quality_status || warnings.length", id="quality", style="margin-bottom: 6px;"):
            html.Div("quality: {{ quality_status }}", v_if="quality_status", style="font-weight: bold",
                     id="quality-status", classes=("{'text-error': quality_status == 'failed', 'text-warning': quality_status == 'review'}",))
            html.Div("{{ r }}", v_for="r in quality_reasons", key="r")
            html.Div("{{ w }}", v_for="w in warnings", key="w", classes="text-warning")
        html.Div("Window / level", classes="text-subtitle-2")
        v3.VSlider(v_model=("window",), min=0, max=("wl_max - wl_min",), label="W", density="compact", hide_details=True, disabled=("!case_name",))
        v3.VSlider(v_model=("level",), min=("wl_min",), max=("wl_max",), label="L", density="compact", hide_details=True, disabled=("!case_name",))
        html.Div("Correct", classes="text-subtitle-2 mt-2")
        v3.VSelect(v_model=("active_segment",), items=("segments",), label="segment", density="compact", hide_details=True, id="segment-select")
        with v3.VBtnToggle(v_model=("tool",), mandatory=True, density="compact", classes="my-1", disabled=("!segments.length",)):
            v3.VBtn("None", value="none", id="tool-none")
            v3.VBtn("Paint", value="paint", id="tool-paint")
            v3.VBtn("Erase", value="erase", id="tool-erase")
        v3.VSlider(v_model=("brush_mm",), min=1, max=30, step=0.5, label="brush (mm)", density="compact", hide_details=True,
                   thumb_label=True, id="brush-size")
        with html.Div(classes="my-1"):
            v3.VBtn("Undo", click=self.undo_edit, disabled=("!can_undo",), density="compact", id="undo-button", classes="mr-1")
            v3.VBtn("Redo", click=self.redo_edit, disabled=("!can_redo",), density="compact", id="redo-button")
        html.Div("Levels", classes="text-subtitle-2 mt-2")
        with html.Div(classes="my-1"):
            v3.VBtn("all up one level", click=(self.shift_levels, "[-1]"), density="compact", disabled=("!segments.length",), classes="mr-1", id="shift-up")
            v3.VBtn("all down one", click=(self.shift_levels, "[1]"), density="compact", disabled=("!segments.length",), id="shift-down")
        with html.Div(style="display: flex; gap: 4px;"):
            v3.VSelect(v_model=("rename_from",), items=("segments.filter(n => !n.includes('-') && !n.includes(' '))",), label="vertebra",
                       density="compact", hide_details=True, id="rename-from")
            v3.VTextField(v_model=("rename_to",), label="new name", density="compact", hide_details=True, style="max-width: 90px", id="rename-to")
            v3.VBtn("Rename", click=self.rename, density="compact", disabled=("!rename_from || !rename_to",), id="rename-button")
        html.Div("Export", classes="text-subtitle-2 mt-2")
        with html.Div(classes="my-1"):
            v3.VBtn("CSV", density="compact", classes="mr-1", id="export-csv", disabled=("!table_rows.length",),
                    click=f"utils.download(case_name + '_measurements.csv', trigger('{self.server.controller.trigger_name(self.export_csv)}'), 'text/csv')")
            v3.VBtn(".seg.nrrd", density="compact", classes="mr-1", id="export-seg", disabled=("!segments.length",),
                    click=f"utils.download(case_name + '.seg.nrrd', trigger('{self.server.controller.trigger_name(self.export_seg_nrrd)}'), 'application/octet-stream')")
            v3.VBtn("labels", density="compact", classes="mr-1", id="export-labels", disabled=("!segments.length",),
                    click=f"utils.download(case_name + '_labels.nii.gz', trigger('{self.server.controller.trigger_name(self.export_labels)}'), 'application/gzip')")
            v3.VBtn("DICOM SEG", density="compact", id="export-dicom-seg", v_if="dicom_input", disabled=("!segments.length",),
                    click=f"utils.download(case_name + '_seg.dcm', trigger('{self.server.controller.trigger_name(self.export_dicom_seg)}'), 'application/dicom')")
        html.Div("Slice positions", classes="text-subtitle-2 mt-2")
        html.Div("{{ name }}: {{ value }}", v_for="(value, name) in slice_positions", key="name", classes="slice-position",
                 raw_attrs=[':data-view="name"'])

    def _build_table(self) -> None:
        with html.Div(classes="text-subtitle-2 px-2", id="table-title"):
            html.Span("Measurements {{ table_state }}")
            html.Span(" (updated {{ edit_to_table_s }} s after the edit)", v_if="edit_to_table_s !== null", style="font-weight: normal; color: #777")
        with html.Table(id="measurements", style="border-collapse: collapse; font-size: 12px; white-space: nowrap;", classes="measurements"):
            with html.Thead():
                with html.Tr():
                    html.Th("{{ h.title }}", v_for="h in table_headers", key="h.key", style="position: sticky; top: 0; background: #eee; padding: 2px 6px; text-align: left;")
            with html.Tbody():
                with html.Tr(v_for="row in table_rows", key="row.structure + row.level", click=(self.jump_to, "[row.level]"), style="cursor: pointer;",
                             raw_attrs=[':data-level="row.level"']):
                    html.Td("{{ row[h.key] }}", v_for="h in table_headers", key="h.key", style="padding: 1px 6px; border-bottom: 1px solid #ddd;",
                            raw_attrs=[':data-key="h.key"'])

    # -- loading -----------------------------------------------------------------------------------
    def load(self, image_path, label_path=None) -> None:
        """Open an image (and optionally its labels); one clear line on the page when it is refused."""
        self._cancel_job()
        volume = self.case.load_image(image_path)
        self.slicer.display_manager.show_volume_in_slice_background(volume)
        for view in self.slicer.view_manager.get_slice_views():
            view.set_visible_in_3d(True)
        self.slicer.display_manager.reset_views()
        low, high = VolumeWindowLevel.get_volume_scalar_range(volume)
        window, level = VolumeWindowLevel.min_max_to_window_level(*VolumeWindowLevel.get_volume_auto_min_max_range(volume))
        with self.state:
            self.state.wl_min, self.state.wl_max = float(low), float(high)
            self.state.window, self.state.level = float(window), float(level)
            self.state.case_name = imageio.strip_image_suffix(Path(image_path).name)
            self.state.dicom_input = self.case.dicom_folder is not None
            self.summary = None
            self._set_measurements([])
        if label_path:
            self._show_segmentation(self.case.load_labels(label_path))
        self._update_slice_positions()

    def _guarded(self, action, *args) -> None:
        try:
            action(*args)
        except (SpineAnalysisError, ValueError, OSError) as error:
            with self.state:
                self._say(error=str(error).splitlines()[0] if str(error) else type(error).__name__)

    def open_selected(self) -> None:
        def run():
            self.load(self.data.resolve(self.state.selected_file))
            self._say(f"opened {self.state.selected_file}")

        self._guarded(run)

    def upload(self, files) -> None:
        def run():
            received = []
            for item in files or []:
                content = item.get("content")
                if isinstance(content, str):  # some clients send base64
                    content = base64.b64decode(content)
                received.append((item.get("name", ""), bytes(content or b"")))
            self.load(self.uploads.save(received))
            self._say("opened the upload")

        self._guarded(run)

    def _show_segmentation(self, segmentation_node) -> None:
        self.editor.set_active_segmentation(segmentation_node, self.case.volume_node)
        self.editor.show_3d(True)
        names = list(self.case.segment_names().values())
        with self.state:
            self.state.segments = names
            self.state.active_segment = names[0] if names else None
            self.state.tool = "none"
        self._edited_at = 0.0  # measure now

    # -- segmentation job --------------------------------------------------------------------------
    def start_segmentation(self) -> None:
        if self.case.image is None or self.job is not None:
            return
        self.job_dir = Path(tempfile.mkdtemp(prefix="spineanalysis-job-"))
        source = self.job_dir / "input.nii.gz"
        imageio.write_image(self.case.image, source)
        self.job = start_segmentation(source, self.job_dir / "labels.nii.gz", self.job_dir / "summary.json", self.device)
        with self.state:
            self.state.running, self.state.progress, self.state.progress_text = True, 0, "starting the segmentation"
            self._say()

    def cancel_segmentation(self) -> None:
        self._cancel_job()
        with self.state:
            self.state.running = False
            self._say("the segmentation was cancelled")

    def _cancel_job(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.job = None
        if self.job_dir is not None:
            import shutil

            shutil.rmtree(self.job_dir, ignore_errors=True)
            self.job_dir = None

    def _poll_job(self) -> None:
        job = self.job
        job.poll()
        with self.state:
            self.state.progress, self.state.progress_text = job.progress, job.message
        if job.is_running:
            return
        job.poll()
        output = self.job_dir / "labels.nii.gz"
        try:
            if not job.succeeded or not output.is_file():
                tail = job.output_tail(3).splitlines()
                raise SpineAnalysisError(f"the segmentation failed (exit status {job.returncode}): {tail[-1] if tail else ''}")
            self.summary = job_summary(job.lines, self.job_dir / "summary.json")
            self._show_segmentation(self.case.import_labels(imageio.read_label_map(output, reference=self.case.image)))
            with self.state:
                self._say(f"segmented: {', '.join(self.summary.get('levels', []))}")
        except (SpineAnalysisError, OSError) as error:
            with self.state:
                self._say(error=str(error))
        finally:
            self.job = None
            self._cancel_job()
            with self.state:
                self.state.running = False

    # -- correction --------------------------------------------------------------------------------
    def _on_edit(self, *_args) -> None:
        self._edited_at = time.monotonic()
        if self._first_edit_at is None:
            self._first_edit_at = self._edited_at
        self.state.table_state = "(updating)"

    def undo_edit(self) -> None:
        if self.undo.can_undo():
            self.undo.undo()
        self._refresh_undo()

    def redo_edit(self) -> None:
        if self.undo.can_redo():
            self.undo.redo()
        self._refresh_undo()

    def _refresh_undo(self) -> None:
        self.state.can_undo, self.state.can_redo = self.undo.can_undo(), self.undo.can_redo()

    def _apply_tool(self) -> None:
        tool = self.state.tool
        if tool == "none" or self.case.segmentation_node is None:
            self.editor.deactivate_effect()
            return
        sid = self.case.segment_id(self.state.active_segment or "")
        if sid is None:
            return
        self.editor.set_active_segment_id(sid)
        effect = self.editor.set_active_effect_type(SegmentationEffectPaint if tool == "paint" else SegmentationEffectErase)
        effect.set_use_sphere_brush(False)
        effect.set_brush_diameter(float(self.state.brush_mm), BrushDiameterMode.Absolute)

    def shift_levels(self, delta) -> None:
        self._guarded(lambda: self._renamed(self.case.shift_levels(int(delta))))

    def rename(self) -> None:
        self._guarded(lambda: self._renamed(self.case.relabel({self.state.rename_from: self.state.rename_to.strip()})))

    def _renamed(self, renames: dict) -> None:
        names = list(self.case.segment_names().values())
        with self.state:
            self.state.segments = names
            if self.state.active_segment in renames:
                self.state.active_segment = renames[self.state.active_segment]
            self.state.rename_from, self.state.rename_to = None, ""
            self._say("renamed " + ", ".join(f"{o} -> {n}" for o, n in renames.items()) if renames else "nothing to rename")
        self._edited_at = 0.0

    def jump_to(self, name) -> None:
        self._guarded(lambda: self.case.jump_to(str(name)))
        self._update_slice_positions()

    def _update_slice_positions(self) -> None:
        positions = {}
        for view in self.slicer.view_manager.get_slice_views():
            tag = view.get_singleton_tag()
            if tag in SLICE_VIEWS:
                positions[SLICE_VIEWS[tag]] = f"{view.get_slice_value():.1f} mm"
        if positions != self.state.slice_positions:
            with self.state:
                self.state.slice_positions = positions

    # -- measurements ------------------------------------------------------------------------------
    def _set_measurements(self, measurements) -> None:
        self.measurements = list(measurements)
        self.quality = assess(self.measurements, self.summary)
        has_case = bool(self.measurements) or self.summary is not None
        self.state.quality_status = self.quality.status if has_case else ""
        self.state.quality_reasons = list(self.quality.reasons) if has_case else []
        self.state.warnings = list(self.quality.notes) if has_case else []
        headers, rows = build_table(self.measurements)
        self.state.table_headers, self.state.table_rows = headers, rows
        self.state.table_version += 1
        self.state.table_state = ""

    async def _measure(self) -> None:
        first_edit, self._first_edit_at = self._first_edit_at, None
        self._edited_at = None
        self._measuring = True
        try:
            label_map = self.case.label_map()  # VTK export on the loop's thread
            if not label_map or not any(self.case.segment_labels()):
                measurements = []
            else:
                measurements = await asyncio.get_running_loop().run_in_executor(None, self.case.measure, label_map)
            with self.state:
                self._set_measurements(measurements)
                if first_edit is not None:  # shown in the table's title; read by benchmark_web.py
                    self.state.edit_to_table_s = round(time.monotonic() - first_edit, 3)
        except SpineAnalysisError as error:
            with self.state:
                self._set_measurements([])
                self._say(error=f"measurements: {error}")
        finally:
            self._measuring = False

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            try:
                if self.job is not None:
                    self._poll_job()
                edited = self._edited_at
                if edited is not None and not self._measuring and time.monotonic() - edited >= MEASURE_DELAY_S and self.case.segmentation_node is not None:
                    await self._measure()
                self._update_slice_positions()
                if (self.state.can_undo, self.state.can_redo) != (self.undo.can_undo(), self.undo.can_redo()):
                    with self.state:
                        self._refresh_undo()
            except Exception as error:  # noqa: BLE001 - the page must stay usable; the reason is shown
                with self.state:
                    self._say(error=f"{type(error).__name__}: {error}")

    def _start_loops(self, **_kwargs) -> None:
        create_task(self._loop())

    # -- exports -----------------------------------------------------------------------------------
    def export_csv(self) -> str:
        with tempfile.TemporaryDirectory(prefix="spineanalysis-export-") as folder:
            csv_path, _json = write_measurements(self.measurements, folder, quality=self.quality.status)
            return csv_path.read_text(encoding="utf-8")

    def _attachment(self, write, suffix: str):
        with tempfile.TemporaryDirectory(prefix="spineanalysis-export-") as folder:
            path = Path(folder) / f"export{suffix}"
            write(path)
            return self.server.protocol.addAttachment(path.read_bytes())

    def export_seg_nrrd(self):
        return self._attachment(self.case.write_seg_nrrd, ".seg.nrrd")

    def export_labels(self):
        """The label map (scheme values on the image grid), as ``spineanalysis measure`` and training read it."""
        return self._attachment(lambda path: imageio.write_image(self.case.label_map(), path), ".nii.gz")

    def export_dicom_seg(self):
        try:
            return self._attachment(self.case.write_dicom_seg, ".dcm")
        except SpineAnalysisError as error:
            with self.state:
                self._say(error=str(error))
            return ""

    def close(self, **_kwargs) -> None:
        self._cancel_job()
        self.uploads.close()
        self.case.close()


def bind_state_changes(app: ReviewApp) -> None:
    """Reactions to widgets (kept apart so the class body stays readable)."""
    state = app.state

    @state.change("window", "level")
    def _window_level(window, level, **_):
        if app.case.volume_node is not None and window:
            VolumeWindowLevel.set_volume_node_window_level(app.case.volume_node, float(window), float(level))

    @state.change("tool", "active_segment", "brush_mm")
    def _tool(**_):
        app._apply_tool()
