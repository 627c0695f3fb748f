"""The review page's layout (trame / Vuetify 3 widgets): what is on the page and which state it shows.

Behaviour lives in :mod:`.app`; element ids (``#segment-button``, ``tr[data-level=...]``, ...) are what the
end-to-end test clicks.
"""

from __future__ import annotations

from trame.widgets import client, html
from trame.widgets import vuetify3 as v3
from trame_vuetify.ui.vuetify3 import SinglePageLayout

OWNER_TAB = "tab_role === 'owner'"  # the page shows the case only in the tab that owns it (tabs.OneTab)
NOT_OWNER_TAB = "tab_role === 'other' || tab_role === 'taken'"
# The page's id (made once per page load, kept over reconnections) and the id of the page this tab showed before
# a reload (sessionStorage is per tab): they tell the server a reconnection or a reload of the owning page
# (ownership.py). With reconnect=auto in the address trame's own <trame-reconnect> retries by itself.
PAGE_ID_SCRIPT = """
if (!window.trame.utils.reviewPage) {
  let previous = '';
  const page = Math.random().toString(36).slice(2) + Date.now().toString(36);
  try { previous = sessionStorage.getItem('spineanalysis-review-page') || ''; sessionStorage.setItem('spineanalysis-review-page', page); } catch (e) {}
  window.trame.utils.reviewPage = {page, previous};
  const url = new URL(window.location.href);
  if (url.searchParams.get('reconnect') !== 'auto') { url.searchParams.set('reconnect', 'auto'); window.history.replaceState({}, document.title, url.toString()); }
}
"""
#: shown when the connection to the server drops (trame's template keys): it reconnects by itself, then claims again
RECONNECT_TEMPLATE = ('<trame-reconnect message="The connection to the review server was lost: reconnecting (click to retry now)" '
                      ':max-retry="120" :delay="1000" />')


def build_page(app) -> SinglePageLayout:
    """The page: toolbar (open, upload, segment, cancel), the views, the side panel, the table; in a second tab
    only the note that the case is open in another one (:class:`.tabs.OneTab`)."""
    ctrl = app.server.controller
    with SinglePageLayout(app.server, full_height=True) as page:
        page.title.set_text("SpineAnalysis review")
        with page.toolbar:
            v3.VSpacer()
            with html.Template(v_if=OWNER_TAB):
                _toolbar(app)
        with page.content:
            client.Script(PAGE_ID_SCRIPT)
            app.state.trame__template_error = app.state.trame__template_error_reconnect = RECONNECT_TEMPLATE
            # which tab shows the case (tabs.OneTab); runs again after a reconnection (the page is rebuilt)
            client.ClientTriggers(mounted=f"trigger('{ctrl.trigger_name(app.claim_tab)}', [utils.reviewPage.page, utils.reviewPage.previous])")
            _other_tab(app)
            # the window's height below the app bar and above the footer (Vuetify's layout variables), so the
            # views and the table stay in the window whatever the side panel holds (it scrolls)
            with html.Div(v_if=OWNER_TAB, id="page-body",
                          style="display: flex; flex-direction: column; height: calc(100vh - var(--v-layout-top, 64px) - var(--v-layout-bottom, 0px));"):
                _page_body(app, page)
        _confirm_dialog(app)
    return page


def _other_tab(app) -> None:
    """A page that does not own the case: why, and *Take over here* (the other page then stops editing)."""
    with html.Div(v_if=NOT_OWNER_TAB, id="other-tab", classes="ma-6"):
        html.Div("This case is open in another tab or window of this review server. Only one of them can show and edit it: "
                 "the server renders each view once, at the size of one window. Take it over here (the other tab then stops "
                 "editing), or close the other one: this tab takes over a few seconds after it closes.",
                 v_if="tab_role === 'other'", id="other-tab-note", classes="text-h6")
        html.Div("This case was taken over in another tab or window. This tab no longer shows or edits it; everything done "
                 "here up to the hand-over is in the case the other tab shows.", v_if="tab_role === 'taken'", id="taken-note", classes="text-h6")
        html.Div("{{ n }}", v_for="n in tab_notes", key="n", classes="text-warning tab-note")
        v3.VBtn("Take over here", color="primary", classes="mt-4", id="take-over-button",
                click=f"trigger('{app.server.controller.trigger_name(app.take_over_tab)}', [utils.reviewPage.page])")


def _toolbar(app) -> None:
    ctrl = app.server.controller
    v3.VSelect(v_if="files.length", v_model=("selected_file",), items=("files",), label="image in the data folder",
               density="compact", hide_details=True, style="max-width: 320px", classes="mx-2")
    v3.VBtn("Open", v_if="files.length", click=app.open_selected, disabled=("!selected_file || running",), id="open-button")
    v3.VFileInput(label="upload an image", multiple=True, density="compact", hide_details=True, style="max-width: 260px",
                  classes="mx-2", change=f"trigger('{ctrl.trigger_name(app.upload)}', [$event.target.files])",
                  disabled=("running",), id="upload-input")
    v3.VBtn("Segment", click=app.start_segmentation, disabled=("!case_name || running",), color="primary", id="segment-button", classes="mx-1")
    v3.VBtn("Cancel", click=app.cancel_segmentation, disabled=("!running",), id="cancel-button", classes="mx-1")


def _page_body(app, page) -> None:
    v3.VProgressLinear(v_if="running", model_value=("progress * 100",), height=6, color="primary")
    with html.Div(style="padding: 2px 8px; min-height: 24px;"):
        html.Span("{{ case_name }} ", style="font-weight: bold", id="case-name")
        html.Span("{{ progress_text }} ", v_if="running", id="progress-text")
        html.Span("{{ message }}", id="message")
        html.Span("{{ error }}", id="error", style="color: #d32f2f; font-weight: bold")
        html.Span(" {{ tab_notes.join('; ') }}", v_if="tab_notes.length", classes="text-warning tab-note")  # e.g. a stroke applied at a drop
    with html.Div(style="display: flex; flex: 6 1 0; min-height: 300px;"):
        with html.Div(style="flex: 1; display: flex; position: relative;", id="views"):
            app.layout_manager.initialize_layout_grid(page)
        with html.Div(style="width: 330px; overflow-y: auto; padding: 6px; font-size: 13px;", id="side-panel"):
            _side_panel(app)
    with html.Div(style="flex: 4 1 0; min-height: 120px; overflow: auto; border-top: 1px solid #888;", id="table-panel"):
        _table(app)


def _side_panel(app) -> None:
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
    with v3.VBtnToggle(v_model=("tool",), mandatory=True, density="compact", classes="my-1", disabled=("!segments.length || running",)):
        v3.VBtn("None", value="none", id="tool-none")
        v3.VBtn("Paint", value="paint", id="tool-paint")
        v3.VBtn("Erase", value="erase", id="tool-erase")
    v3.VSlider(v_model=("brush_mm",), min=1, max=30, step=0.5, label="brush (mm)", density="compact", hide_details=True,
               thumb_label=True, id="brush-size")
    v3.VCheckbox(v_model=("intensity_limit",), label="paint / erase only in this intensity range", density="compact", hide_details=True,
                 disabled=("!segments.length || running",), id="intensity-limit")
    v3.VRangeSlider(v_model=("intensity_range",), min=("wl_min",), max=("wl_max",), step=("intensity_step",), density="compact", hide_details=True,
                    disabled=("!intensity_limit",), id="intensity-range")
    html.Div("editable intensities {{ intensity_range[0].toFixed(1) }} - {{ intensity_range[1].toFixed(1) }}",  # always shown: the views keep their size
             classes=("intensity_limit ? 'text-caption' : 'text-caption text-disabled'",), id="intensity-range-text")
    with html.Div(classes="my-1"):
        v3.VBtn("Undo", click=app.undo_edit, disabled=("!can_undo || running",), density="compact", id="undo-button", classes="mr-1")
        v3.VBtn("Redo", click=app.redo_edit, disabled=("!can_redo || running",), density="compact", id="redo-button")
    html.Div("Levels", classes="text-subtitle-2 mt-2")
    with html.Div(classes="my-1"):
        v3.VBtn("all up one level", click=(app.shift_levels, "[-1]"), density="compact", disabled=("!segments.length || running",), classes="mr-1", id="shift-up")
        v3.VBtn("all down one", click=(app.shift_levels, "[1]"), density="compact", disabled=("!segments.length || running",), id="shift-down")
    with html.Div(style="display: flex; gap: 4px;"):
        v3.VSelect(v_model=("rename_from",), items=("segments.filter(n => !n.includes('-') && !n.includes(' '))",), label="vertebra",
                   density="compact", hide_details=True, id="rename-from")
        v3.VTextField(v_model=("rename_to",), label="new name", density="compact", hide_details=True, style="max-width: 90px", id="rename-to")
        v3.VBtn("Rename", click=app.rename, density="compact", disabled=("!rename_from || !rename_to || running",), id="rename-button")
    with html.Div(classes="text-subtitle-2 mt-2"):
        html.Span("Export")
        html.Span(" - corrections not downloaded yet", v_if="unsaved_corrections", classes="text-warning", id="unsaved")
    with html.Div(classes="my-1"):
        v3.VBtn("CSV", density="compact", classes="mr-1", id="export-csv", disabled=("!table_rows.length",),
                click=f"utils.download(case_name + '_measurements.csv', trigger('{app.server.controller.trigger_name(app.export_csv)}'), 'text/csv')")
        v3.VBtn(".seg.nrrd", density="compact", classes="mr-1", id="export-seg", disabled=("!segments.length",),
                click=f"utils.download(case_name + '.seg.nrrd', trigger('{app.server.controller.trigger_name(app.export_seg_nrrd)}'), 'application/octet-stream')")
        v3.VBtn("labels", density="compact", classes="mr-1", id="export-labels", disabled=("!segments.length",),
                click=f"utils.download(case_name + '_labels.nii.gz', trigger('{app.server.controller.trigger_name(app.export_labels)}'), 'application/gzip')")
        v3.VBtn("DICOM SEG", density="compact", id="export-dicom-seg", v_if="dicom_input", disabled=("!segments.length",),
                click=f"utils.download(case_name + '_seg.dcm', trigger('{app.server.controller.trigger_name(app.export_dicom_seg)}'), 'application/dicom')")
    html.Div("Slice positions", classes="text-subtitle-2 mt-2")
    html.Div("{{ name }}: {{ value }}", v_for="(value, name) in slice_positions", key="name", classes="slice-position",
             raw_attrs=[':data-view="name"'])
    html.Div("Landmarks", classes="text-subtitle-2 mt-2")
    v3.VCheckbox(v_model=("show_landmarks",), label="show where the clicked row was measured", density="compact", hide_details=True,
                 id="show-landmarks")
    html.Div("{{ landmarks_note }}", classes="text-caption", id="landmarks-note")

def _confirm_dialog(app) -> None:
    """The question before corrections that were not downloaded would be replaced (:meth:`ReviewApp.ask_before`)."""
    with v3.VDialog(v_model=("confirm_open",), v_if=OWNER_TAB, persistent=True, max_width=520):
        with v3.VCard(id="confirm-dialog"):
            v3.VCardTitle("Replace the corrected segmentation?")
            v3.VCardText("{{ confirm_text }}", id="confirm-text")
            with v3.VCardActions():
                v3.VSpacer()
                v3.VBtn("Keep my corrections", click=(app.answer, "[false]"), id="confirm-keep")
                v3.VBtn("Replace", click=(app.answer, "[true]"), color="error", id="confirm-replace")


def _table(app) -> None:
    with html.Div(classes="text-subtitle-2 px-2", id="table-title"):
        html.Span("Measurements {{ table_state }}")
        html.Span(" (updated {{ edit_to_table_s }} s after the edit)", v_if="edit_to_table_s !== null", style="font-weight: normal; color: #777")
        html.Span(" - quality: {{ quality_status }}", v_if="quality_status", id="table-quality",
                  classes=("{'text-error': quality_status == 'failed', 'text-warning': quality_status == 'review'}",))
        html.Span("{{ quality_reasons.length ? ' (' + quality_reasons.join('; ') + ')' : '' }}", style="font-weight: normal")
    with html.Table(id="measurements", style=("'border-collapse: collapse; font-size: 12px; white-space: nowrap;' + (table_state ? ' opacity: 0.4;' : '')",),
                    classes="measurements"):
        with html.Thead():
            with html.Tr():
                html.Th("{{ h.title }}", v_for="h in table_headers", key="h.key", style="position: sticky; top: 0; background: #eee; padding: 2px 6px; text-align: left;")
        with html.Tbody():
            with html.Tr(v_for="row in table_rows", key="row.structure + row.level", click=(app.jump_to, "[row.level, row.structure]"), style="cursor: pointer;",
                         raw_attrs=[':data-level="row.level"']):
                html.Td("{{ row[h.key] }}", v_for="h in table_headers", key="h.key", style="padding: 1px 6px; border-bottom: 1px solid #ddd;",
                        raw_attrs=[':data-key="h.key"', ':title="row.why[h.key] || null"',
                                   ':style="row.why[h.key] ? {background: \'#f1f1f1\'} : null"'])
    with html.Div(classes="px-2", style="font-size: 11px; color: #555;", id="table-estimates"):
        html.Div("{{ e }}", v_for="e in table_estimates", key="e")
