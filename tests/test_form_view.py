"""The form view (issue 16 item 5, midistruct.form.view): a song's piano roll with its sections shaded and labelled,
the self-similarity matrix beside it, on a synthetic A B A song whose sections the analysis finds."""

from __future__ import annotations

import pytest
import symusic

from midistruct.form.analysis import Settings, analyse
from midistruct.form.view import form_view, label_colours

TPQ = 480
BAR = 4 * TPQ
MATERIAL = {"A": [60, 64, 67, 72], "B": [61, 66, 69, 73]}  # a different key per letter


def song(plan: str = "ABA", *, bars: int = 8) -> symusic.Score:
    """A 4/4 song of ``bars``-bar sections in the order of ``plan``, a bar of quarter notes (alternating
    figures) and a bass note each."""
    score = symusic.Score(TPQ)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    track = symusic.Track(name="piano", program=0)
    for s, letter in enumerate(plan):
        for k in range(bars):
            start = (s * bars + k) * BAR
            figure = MATERIAL[letter] if k % 2 == 0 else MATERIAL[letter][::-1]
            for beat, pitch in enumerate(figure):
                track.notes.append(symusic.Note(start + beat * TPQ, TPQ // 2, pitch, 80))
            track.notes.append(symusic.Note(start, BAR, MATERIAL[letter][0] - 24, 70))
    score.tracks.append(track)
    return score


def _spans(ax) -> list:
    return [p for p in ax.patches if p.get_gid() == "section"]


def _x_range(span) -> tuple[float, float]:
    """A shaded span's start and end on x (axvspan gives a Rectangle in data x, axes y)."""
    return span.get_x(), span.get_x() + span.get_width()


@pytest.fixture(scope="module")
def analysed():
    score = song()
    return score, analyse(score, settings=Settings(method="foote", features="notes"))


def test_view_shades_each_section_beside_the_matrix(analysed, tmp_path):
    score, form = analysed
    assert [s.label for s in form.sections] == ["A", "B", "A"]  # the song the view is checked on
    path = tmp_path / "view.png"
    fig = form_view(score, form, path=path)
    roll, matrix = fig.axes
    spans = _spans(roll)
    assert len(spans) == len(form.sections)
    colours = label_colours(["A", "B"])
    for span, section in zip(spans, form.sections):  # each span covers its section, in its label's colour
        assert _x_range(span) == pytest.approx((section.start_qn, section.end_qn))
        assert span.get_facecolor()[:3] == pytest.approx(colours[section.label][:3])
    assert [t.get_text().strip() for t in roll.texts] == ["A", "B", "A"]
    assert any(c.get_gid() == "notes" for c in roll.collections)  # render's piano roll drew the notes
    assert matrix.images[0].get_array().shape == form.ssm.shape
    assert len(matrix.patches) == len(form.sections)  # each section's block outlined
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_view_draws_a_reference_strip(analysed):
    score, form = analysed
    fig = form_view(score, form, reference=[(0, 12, "x"), (12, 24, "y")])
    assert len(fig.axes) == 3
    strip = fig.axes[2]
    assert [t.get_text().strip() for t in strip.texts] == ["x", "y"]
    assert _x_range(_spans(strip)[-1]) == pytest.approx((12 * 4, 24 * 4))  # bars 12..24, in quarter notes


def test_view_counts_bars_in_the_forms_meter(analysed):
    """A form counted in 4/4 of a file that says 1/4 (POP909) draws its bar lines every 4 quarter notes."""
    score, _ = analysed
    quarter = score.copy()
    quarter.time_signatures = [symusic.TimeSignature(0, 1, 4)]
    form = analyse(quarter, settings=Settings(time_signature="4/4"))
    fig = form_view(quarter, form)
    lines = next(c for c in fig.axes[0].collections if c.get_gid() == "bar_lines")
    xs = sorted({round(float(seg[0][0]), 3) for seg in lines.get_segments()})
    assert xs[:3] == [0.0, 4.0, 8.0] and len(xs) == len(form.novelty) + 1
