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

import SimpleITK as sitk
from trame.app import TrameApp
from trame.app.asynchronous import create_task
from trame_slicer.core import LayoutManager, SlicerApp, VolumeWindowLevel
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.segmentation import SegmentationEffectErase, SegmentationEffectPaint
from trame_slicer.segmentation.paint_effect_parameters import BrushDiameterMode
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition
from undo_stack import UndoStack

from .. import imageio
from ..background import BackgroundProcess
from ..quality import assess
from ..errors import SpineAnalysisError
from ..measurements import write_measurements
from .files import DataFolder, UploadFolder
from .job import job_summary, start_segmentation
from .landmarks import LandmarkMarkups
from .navigation import NotLabelled
from .scene import ReviewScene
from .table import build_table, estimate_legend
from .tabs import OneTab
from .ui import build_page

#: Window/level a CT opens with (HU): a bone window, in which cortex, endplates and trabecular bone are told
#: apart (common bone settings are W 1500-2000, L 300-500); the sliders change it.
CT_WINDOW_LEVEL = (1800.0, 400.0)
#: Delay after the last edit before the table is measured again (edits closer together are measured once).
MEASURE_DELAY_S = 0.15
LAYOUT_ID = "review"
#: VTK scalar types of integer voxels (vtkType.h: VTK_CHAR ... VTK_UNSIGNED_LONG_LONG)
INTEGER_TYPES = {2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17}
SLICE_VIEWS = {"Yellow": "sagittal", "Red": "axial", "Green": "coronal"}
#: what a page that does not own the case is told was not applied, by the refused trigger's function
REFUSED_LABELS = {
    "open_selected": "Open", "upload": "the upload", "start_segmentation": "Segment", "cancel_segmentation": "Cancel",
    "answer": "the answer to the question", "undo_edit": "Undo", "redo_edit": "Redo", "shift_levels": "the level shift",
    "rename": "Rename", "jump_to": "the row click", "export_csv": "the CSV download", "export_seg_nrrd": "the .seg.nrrd download",
    "export_labels": "the labels download", "export_dicom_seg": "the DICOM SEG download",
}


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
        # one tab shows and edits the case at a time (one render size per view; the server refuses the others)
        self.tabs = OneTab(self.server, open_triggers=(self.claim_tab, self.take_over_tab), labels=REFUSED_LABELS)
        self.server.add_protocol_to_configure(self.tabs.register)
        self.device = device
        self.data = DataFolder(data_dir)
        self.uploads = UploadFolder()
        self.slicer = SlicerApp()
        register_rca_factories(self.slicer.view_manager, self.server)
        self.layout_manager = LayoutManager(self.slicer.scene, self.slicer.view_manager, self.server)
        self.layout_manager.register_layout(LAYOUT_ID, review_layout())
        self.layout_manager.set_layout(LAYOUT_ID)  # views exist before any brush effect is activated
        self.case = ReviewScene(self.slicer)
        self.landmarks = LandmarkMarkups(self.slicer.scene)  # where the clicked row's values were measured
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
        self._case_number = 0  # counts the images opened: a measurement of an earlier one is dropped
        # corrections (paint/erase, renames) since the segmentation was made or loaded that have not been
        # downloaded: replacing the segmentation then asks first (``ask_before``)
        self.unsaved = False
        self._importing = False  # segments being replaced by the page itself: not a user's correction
        self._pending = None  # the action waiting for the user's answer
        self._jump_note = ""  # what the last row click said about its level (not labelled: what is shown instead)
        self._init_state()
        self.ui = build_page(self)
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
        s.intensity_limit, s.intensity_range, s.intensity_step = False, [0.0, 1.0], 0
        s.window, s.level, s.wl_min, s.wl_max = 0, 0, 0, 1
        s.table_headers, s.table_rows, s.table_version, s.table_state = [], [], 0, ""
        s.table_estimates = []
        s.edit_to_table_s = None
        s.show_landmarks, s.landmarks_note = True, ""
        s.slice_positions = {}
        s.rename_from, s.rename_to = None, ""
        s.can_undo = s.can_redo = False
        s.dicom_input = False
        s.confirm_open, s.confirm_text = False, ""
        s.unsaved_corrections = False  # mirrors ``unsaved`` for the page
        # per page (tabs.OneTab): "owner" shows the case; "other" waits, "taken" lost it to another tab; notes:
        # what of this page was refused or finished at a hand-over
        s.tab_role, s.tab_notes = "", []
        s.client_only("tab_role", "tab_notes")

    def claim_tab(self, page="", previous_page="") -> None:
        """A page has loaded or reconnected (``page``: its id, ``previous_page``: the page this tab showed before
        a reload): it shows the case if no other tab holds it (:mod:`.ownership`)."""
        self.tabs.claim(page, previous_page)

    def take_over_tab(self, page="") -> None:
        """*Take over here*: this page gets the case; the former owner's stroke in progress is applied first."""
        self.tabs.take_over(page)

    def _say(self, message: str = "", error: str = "") -> None:
        self.state.message, self.state.error = message, error

    # -- loading -----------------------------------------------------------------------------------
    def load(self, image_path, label_path=None, label_scheme: str = "auto", bodies_path=None, translation=None, image=None) -> None:
        """Open an image (and optionally its labels, in any supported label scheme, with a body map for
        whole-vertebra maps; ``translation``: those labels already read by ``scene.read_labels``; ``image``:
        the image already read by ``imageio.read_image``); one clear line on the page when it is refused.
        A CT opens only with labels."""
        self._cancel_job()
        volume = self.case.load_image(image_path, with_labels=bool(label_path), image=image)
        self.unsaved = False  # the segmentation went with the previous image
        self.slicer.display_manager.show_volume_in_slice_background(volume)
        for view in self.slicer.view_manager.get_slice_views():
            view.set_visible_in_3d(True)
        self.slicer.display_manager.reset_views()
        low, high = VolumeWindowLevel.get_volume_scalar_range(volume)
        window, level = VolumeWindowLevel.min_max_to_window_level(*VolumeWindowLevel.get_volume_auto_min_max_range(volume))
        if self.case.is_ct:
            window, level = CT_WINDOW_LEVEL
            VolumeWindowLevel.set_volume_node_window_level(volume, window, level)
        with self.state:
            self.state.wl_min, self.state.wl_max = float(low), float(high)
            self.state.window, self.state.level = float(window), float(level)
            self.state.intensity_limit, self.state.intensity_range = False, [float(low), float(high)]
            # integer voxels: whole steps (Slicer's threshold casts the bounds to the voxel type)
            self.state.intensity_step = 1 if volume.GetImageData().GetScalarType() in INTEGER_TYPES else 0
            self.state.case_name = imageio.strip_image_suffix(Path(image_path).name)
            self.state.dicom_input = self.case.dicom_folder is not None
            # the previous image's segments went with it (case.clear): no stale names, tools or exports
            self.state.segments, self.state.active_segment, self.state.tool = [], None, "none"
            self.state.rename_from, self.state.rename_to = None, ""
            self.summary = None
            # the previous case's edits and timing went with it: its "(updated X s after the edit)" is not this case's
            self._case_number += 1
            self._edited_at = self._first_edit_at = None
            self.state.edit_to_table_s = None
            self._set_measurements([])
        if label_path:
            self._import(lambda: self.case.load_labels(label_path, label_scheme, bodies_path, translation))
            read = self.case.translation
            with self.state:
                self._say(f"labels read as {read.scheme} ({read.reason}); modality {self.case.modality} ({self.case.modality_source})")
        self._update_slice_positions()

    def _guarded(self, action, *args) -> None:
        try:
            action(*args)
        except (SpineAnalysisError, ValueError, OSError) as error:
            with self.state:
                self._say(error=str(error).splitlines()[0] if str(error) else type(error).__name__)

    # -- replacing the segmentation asks first when it holds corrections not downloaded ------------------
    def ask_before(self, action, what: str) -> None:
        """Run ``action`` now, or - when the segmentation holds corrections not downloaded - after the user
        answers *Replace* in the page's question (*Keep* leaves everything as it is)."""
        if not self.unsaved:
            action()
            return
        self._pending = action
        with self.state:
            self.state.confirm_text = (f"{what} replaces the segmentation, and your corrections to it (paint, erase, renames) "
                                       "have not been downloaded. Replace them, or keep them (then download the labels or .seg.nrrd)?")
            self.state.confirm_open = True

    def answer(self, replace) -> None:
        action, self._pending = self._pending, None
        with self.state:
            self.state.confirm_open, self.state.confirm_text = False, ""
            if not replace:
                self._say("kept the corrected segmentation")
        if replace and action is not None:
            action()

    def open_selected(self) -> None:
        self.ask_before(self._open_selected, f"Opening {self.state.selected_file}")

    def _open_selected(self) -> None:
        def run():
            self.load(self.data.resolve(self.state.selected_file))
            self._say(f"opened {self.state.selected_file}")

        self._guarded(run)

    def upload(self, files) -> None:
        received = []
        for item in files or []:
            content = item.get("content")
            if isinstance(content, str):  # some clients send base64
                content = base64.b64decode(content)
            received.append((item.get("name", ""), bytes(content or b"")))

        def run():
            self.load(self.uploads.save(received))
            self._say("opened the upload")

        self.ask_before(lambda: self._guarded(run), "Opening the upload")

    def _show_segmentation(self, segmentation_node) -> None:
        self.editor.set_active_segmentation(segmentation_node, self.case.volume_node)
        self.editor.show_3d(True)
        names = list(self.case.segment_names().values())
        with self.state:
            self.state.segments = names
            self.state.active_segment = names[0] if names else None
            self.state.tool = "none"
            self.state.edit_to_table_s = None  # the timing was of an edit to the segmentation this one replaces
        self._first_edit_at = None
        self._edited_at = 0.0  # measure now
        self._set_landmarks(None)  # a clicked row of the replaced segmentation is not shown on this one

    # -- segmentation job --------------------------------------------------------------------------
    def start_segmentation(self) -> None:
        if self.case.image is None or self.job is not None:
            return
        self.ask_before(self._start_segmentation, "Segmenting again")

    def _start_segmentation(self) -> None:
        if self.case.image is None or self.job is not None:
            return
        if self.case.is_ct:
            with self.state:
                self._say(error="segmenting CT is refused (no validated CT model): review a CT with its segmentation")
            return
        self.job_dir = Path(tempfile.mkdtemp(prefix="spineanalysis-job-"))
        source = self.job_dir / "input.nii.gz"
        imageio.write_image(self.case.image, source)
        self.job = start_segmentation(source, self.job_dir / "labels.nii.gz", self.job_dir / "summary.json", self.device)
        with self.state:
            self.state.running, self.state.progress, self.state.progress_text = True, 0, "starting the segmentation"
            self.state.tool = "none"  # no corrections to a segmentation the job is about to replace
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
            labels = imageio.read_image(output)  # read once: checked here for "nothing labelled", then imported
            if not sitk.GetArrayViewFromImage(labels).any():  # (a view: ``labels`` must outlive it)
                # nothing labelled: a result, as `spineanalysis analyze` reports it (quality failed, with the
                # job's reasons), not an error about the job's temporary file
                self._clear_segments()
                with self.state:
                    self._set_measurements([])
                    self._say(error="the segmentation labelled no vertebra or disc: see the quality reasons")
                return
            self._import(lambda: self.case.import_labels(labels))  # validated there (check_label_map: grid, values)
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

    def _clear_segments(self) -> None:
        """Remove every segment (the page's own change: a job that labelled nothing replaces the segmentation)."""
        if self.case.segmentation_node is not None:
            self._importing = True
            try:
                self.case.segmentation_node.GetSegmentation().RemoveAllSegments()
            finally:
                self._importing = False
        self.unsaved = False
        with self.state:
            self.state.segments, self.state.active_segment, self.state.tool = [], None, "none"
            self.state.edit_to_table_s = None

    def _import(self, make_segmentation) -> None:
        """Replace the segmentation by ``make_segmentation()``'s (the page's own change, not a correction)."""
        self._importing = True
        try:
            self._show_segmentation(make_segmentation())
        finally:
            self._importing = False
        self.unsaved = False

    # -- correction --------------------------------------------------------------------------------
    def _on_edit(self, *_args) -> None:
        if not self._importing:
            self.unsaved = True
        self._edited_at = time.monotonic()
        if self._first_edit_at is None:
            self._first_edit_at = self._edited_at
        self.state.table_state = "(updating)"

    def undo_edit(self) -> None:
        if self.undo.can_undo() and self.job is None:
            self.undo.undo()
        self._refresh_undo()

    def redo_edit(self) -> None:
        if self.undo.can_redo() and self.job is None:
            self.undo.redo()
        self._refresh_undo()

    def _refresh_undo(self) -> None:
        self.state.can_undo, self.state.can_redo = self.undo.can_undo(), self.undo.can_redo()

    def _apply_tool(self) -> None:
        tool = self.state.tool
        if tool == "none" or self.case.segmentation_node is None or self.job is not None:
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
        if self.job is None:
            self._guarded(lambda: self._renamed(self.case.shift_levels(int(delta))))

    def rename(self) -> None:
        if self.job is None:
            self._guarded(lambda: self._renamed(self.case.relabel({self.state.rename_from: self.state.rename_to.strip()})))

    def _renamed(self, renames: dict) -> None:
        names = list(self.case.segment_names().values())
        self.unsaved = self.unsaved or bool(renames)
        if renames:
            self._set_landmarks(None)  # the clicked row's level now names another structure
        with self.state:
            self.state.segments = names
            if self.state.active_segment in renames:
                self.state.active_segment = renames[self.state.active_segment]
            self.state.rename_from, self.state.rename_to = None, ""
            self._say("renamed " + ", ".join(f"{o} -> {n}" for o, n in renames.items()) if renames else "nothing to rename")
        self._edited_at = 0.0

    def jump_to(self, name, structure=None) -> None:
        """Centre the views on a table row's level and show where its values were measured (``structure``: the
        row's, "vertebra", "disc" or "spine"; :mod:`.landmarks`); when that level is not labelled, say in the message
        line what the views show instead, or that nothing is labelled there (a plain status, not an error)."""
        if structure:
            self.landmarks.show(str(structure), str(name))
            self._say_landmarks()

        def jump():
            try:
                note = self.case.jump_to(str(name))[1]
            except NotLabelled as reason:
                note = str(reason)
            with self.state:  # a note of an earlier click does not stay under a row that has none
                if note or self.state.message == self._jump_note:
                    self.state.message = note
            self._jump_note = note

        self._guarded(jump)
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
    def _set_landmarks(self, landmarks) -> None:
        """The landmarks of the rows now in the table (None: none; the clicked row is forgotten): the shown row is
        drawn again from them, or shows nothing when its values are no longer measured."""
        if landmarks is None:
            self.landmarks.reset()
        else:
            self.landmarks.update(landmarks)
        self._say_landmarks()

    def _say_landmarks(self) -> None:
        self.state.landmarks_note = self.landmarks.note()

    def _set_measurements(self, measurements, landmarks=None) -> None:
        """The table's rows and (``landmarks``, None: none) where their values were measured."""
        self.measurements = list(measurements)
        self._set_landmarks(landmarks)
        self.quality = assess(self.measurements, self.summary)
        has_case = bool(self.measurements) or self.summary is not None
        self.state.quality_status = self.quality.status if has_case else ""
        self.state.quality_reasons = list(self.quality.reasons) if has_case else []
        self.state.warnings = list(self.quality.notes) if has_case else []
        headers, rows = build_table(self.measurements)
        self.state.table_headers, self.state.table_rows = headers, rows
        self.state.table_estimates = estimate_legend(m.parameter for m in self.measurements)
        self.state.table_version += 1
        # an edit that came in while these rows were measured is not in them: they stay marked as updating
        self.state.table_state = "(updating)" if self._edited_at is not None else ""

    async def _measure(self) -> None:
        first_edit, self._first_edit_at = self._first_edit_at, None
        self._edited_at = None
        self._measuring = True
        case_number = self._case_number
        try:
            label_map = self.case.label_map()  # VTK export on the loop's thread
            if not label_map or not any(self.case.segment_labels()):
                measured = [], None
            else:
                measured = await asyncio.get_running_loop().run_in_executor(None, self.case.measure_with_landmarks, label_map)
            if case_number != self._case_number:
                return  # another image was opened while these rows were measured: they are not its rows
            with self.state:
                self._set_measurements(*measured)
                if first_edit is not None:  # shown in the table's title; read by benchmark_web.py
                    self.state.edit_to_table_s = round(time.monotonic() - first_edit, 3)
        except SpineAnalysisError as error:
            if case_number == self._case_number:
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
                if self.state.unsaved_corrections != self.unsaved:
                    with self.state:
                        self.state.unsaved_corrections = self.unsaved
            except Exception as error:  # noqa: BLE001 - the page must stay usable; the reason is shown
                with self.state:
                    self._say(error=f"{type(error).__name__}: {error}")

    def _start_loops(self, **_kwargs) -> None:
        create_task(self._loop())

    # -- exports -----------------------------------------------------------------------------------
    def export_csv(self) -> str:
        """The measurements CSV of the segmentation as it is now: an edit the table has not caught up with yet
        (it is measured 0.15 s after the last one, or is being measured) is measured here first, so the file never
        holds older rows."""
        if (self._edited_at is not None or self._measuring) and self.case.segmentation_node is not None:
            label_map = self.case.label_map()
            self._edited_at = self._first_edit_at = None
            with self.state:
                self._set_measurements(*(self.case.measure_with_landmarks(label_map) if any(self.case.segment_labels()) else ([], None)))
        with tempfile.TemporaryDirectory(prefix="spineanalysis-export-") as folder:
            csv_path, _json = write_measurements(self.measurements, folder, quality=self.quality.status)
            return csv_path.read_text(encoding="utf-8")

    def _attachment(self, write, suffix: str):
        """The segmentation written by ``write`` for a download: the corrections are then saved by the user."""
        with tempfile.TemporaryDirectory(prefix="spineanalysis-export-") as folder:
            path = Path(folder) / f"export{suffix}"
            write(path)
            self.unsaved = False
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

    @state.change("show_landmarks")
    def _show_landmarks(show_landmarks, **_):
        app.landmarks.set_visible(bool(show_landmarks))

    @state.change("intensity_limit", "intensity_range")
    def _intensity_limit(intensity_limit, intensity_range, **_):
        limit_to_intensities(app.editor.editor_node, bool(intensity_limit), intensity_range)


def limit_to_intensities(editor_node, enabled: bool, intensity_range) -> None:
    """Slicer's *editable intensity range* (Segment Editor, masking section): paint and erase change only the
    voxels whose input intensity lies in ``intensity_range`` (inclusive), e.g. to paint a disc up to its dark
    annulus. The mask is applied by Slicer's own segment-editor logic (vtkSlicerSegmentEditorLogic) on every
    stroke."""
    low, high = sorted(float(v) for v in intensity_range)
    editor_node.SetSourceVolumeIntensityMaskRange(low, high)
    editor_node.SetSourceVolumeIntensityMask(enabled)
