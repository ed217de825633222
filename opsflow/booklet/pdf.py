"""The booklet's PDF, made by LibreOffice from the ODT (`soffice --headless --convert-to pdf`).

LibreOffice lays the pages out as it converts, which computes the contents' page-number
fields: the PDF carries the same numbers a user sees on opening the ODT. Each conversion
uses a profile of its own, so that conversions running at once (or a user's LibreOffice)
do not share one and wait on its lock.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path


class PdfError(RuntimeError):
    """LibreOffice made no PDF; the message says why in one line."""


def libreoffice() -> str | None:
    """The LibreOffice command, or None where it is not installed."""
    return shutil.which("soffice") or shutil.which("libreoffice")


def odt_to_pdf(odt: bytes, timeout: float = 1800.0) -> bytes:
    """The PDF of an ODT. A 5,000-contribution booklet takes minutes: the timeout is generous,
    and on expiry the whole LibreOffice process group is killed (soffice starts soffice.bin)."""
    command = libreoffice()
    if command is None:
        raise PdfError("LibreOffice (soffice) is not installed: no PDF")
    with tempfile.TemporaryDirectory(prefix="booklet-pdf-") as work:
        folder = Path(work)
        source = folder / "booklet.odt"
        source.write_bytes(odt)
        profile = (folder / "profile").as_uri()
        process = subprocess.Popen(
            [command, f"-env:UserInstallation={profile}", "--headless", "--norestore",
             "--convert-to", "pdf", "--outdir", str(folder), str(source)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise PdfError(f"LibreOffice did not finish the PDF in {timeout:g} s") from None
        pdf = folder / "booklet.pdf"
        if process.returncode != 0 or not pdf.is_file() or pdf.stat().st_size == 0:
            last = (stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
            raise PdfError(f"LibreOffice made no PDF (exit {process.returncode}): {last}")
        return pdf.read_bytes()
