"""Abstract booklet benchmark: opsflow's renderer and flow against a bare odfpy script.

Generated Indico exports (2,000 and 5,000 contributions, 5 authors each, 1,200-character
abstracts) are rendered by `opsflow.booklet.render`: programme order, contents with page
fields, rendered abstracts, author index, footer. The peer is a bare odfpy script that writes
the same document body element by element, with the same named and page styles, from a tree
prepared beforehand (read back from opsflow's own output, so the content is identical by
construction, and checked equal afterwards). Render time (interleaved, median) and peak
memory (tracemalloc, one run each) are compared. Then, printed separately: LibreOffice's PDF
conversion of the booklet, and the whole flow run with the export fetched by URL from a
local HTTP server, on a temporary Prefect server.

    .venv/bin/python -m bench.booklet [--contributions 2000,5000 --repeat 3 --no-pdf --no-flow]

Targets (issue 16): rendering at most 1.5 x the bare script in time and in peak memory.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import statistics
import tempfile
import threading
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.etree import ElementTree

from odf import text as odf_text
from odf.element import Element
from odf.opendocument import OpenDocumentText

from opsflow.booklet.indico import read_export
from opsflow.booklet.options import BookletOptions
from opsflow.booklet.pdf import libreoffice, odt_to_pdf
from opsflow.booklet.render import add_booklet_styles, render_booklet
from opsflow.booklet.sample import generate_export

OFFICE_NS = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
TEXT_NS = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_CAMEL = {"BookmarkRef": "bookmark-ref", "LineBreak": "line-break", "S": "s"}

Node = tuple[tuple[str, str], dict[tuple[str, str], str], list]  # qname, attributes, children


def _qname(tag: str) -> tuple[str, str]:
    namespace, _, local = tag[1:].partition("}")
    return namespace, local


def _tree(element: ElementTree.Element) -> Node:
    children: list = []
    if element.text:
        children.append(element.text)
    for child in element:
        children.append(_tree(child))
        if child.tail:
            children.append(child.tail)
    attributes = {_qname(k): v for k, v in element.attrib.items()}
    return _qname(element.tag), attributes, children


def flat_content(odt: bytes) -> list[Node]:
    """The document body of an ODT as plain nested tuples (qname, attributes, children)."""
    with zipfile.ZipFile(io.BytesIO(odt)) as archive:
        root = ElementTree.fromstring(archive.read("content.xml"))
    body = root.find(f".//{{{OFFICE_NS}}}text")
    return [_tree(element) for element in body]


# The elements a booklet body holds, by qualified name: the odfpy constructors a hand-written
# script calls (P(stylename=..., text=...), Span(...), ...).
_CONSTRUCTORS = {(TEXT_NS, name.lower() if name not in _CAMEL else _CAMEL[name]): getattr(
    odf_text, name) for name in ("P", "H", "Span", "A", "Bookmark", "BookmarkRef", "Tab",
                                 "LineBreak", "Section", "S")}


def _build(node: Node, styles: dict[str, Element]) -> Element:
    qname, attributes, children = node
    arguments = {}
    for (_, local), value in attributes.items():
        key = local.replace("-", "")
        arguments[key] = styles[value] if key == "stylename" else value
    constructor = _CONSTRUCTORS.get(qname)
    if constructor is None:
        raise SystemExit(f"the bare script does not know {qname}")
    element = constructor(**arguments)
    for child in children:
        if isinstance(child, str):
            element.addText(child)
        else:
            element.addElement(_build(child, styles))
    return element


def bare_odfpy(title: str, body: list[Node]) -> bytes:
    """The peer: plain odfpy calls writing the given body with the same styles."""
    doc = OpenDocumentText()
    styles = {style.getAttribute("name"): style
              for style in add_booklet_styles(doc, title).values()}
    for node in body:
        doc.text.addElement(_build(node, styles))
    out = io.BytesIO()
    doc.write(out)
    return out.getvalue()


def interleaved(ours, peer, repeat: int) -> tuple[list[float], list[float], object, object]:
    """Run both `repeat` times, alternating, so that a change in machine load hits both."""
    times_ours, times_peer, out_ours, out_peer = [], [], None, None
    for _ in range(repeat):
        start = time.perf_counter()
        out_ours = ours()
        times_ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        out_peer = peer()
        times_peer.append(time.perf_counter() - start)
    return times_ours, times_peer, out_ours, out_peer


def peak_memory(work: Callable[[], object]) -> int:
    """The peak of Python allocations while `work` runs (bytes)."""
    gc.collect()
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def bench_rendering(export: dict, repeat: int) -> bytes:
    start = time.perf_counter()
    event = read_export(export)
    validate = time.perf_counter() - start
    options = BookletOptions()
    body = flat_content(render_booklet(event, options))
    title = event.title
    ours_work = partial(render_booklet, event, options)
    peer_work = partial(bare_odfpy, title, body)
    times_ours, times_peer, odt, bare = interleaved(ours_work, peer_work, repeat)
    if flat_content(bare) != body or flat_content(odt) != body:
        raise SystemExit("the bare script did not write the same content; comparison void")
    memory_ours, memory_peer = peak_memory(ours_work), peak_memory(peer_work)
    ours, peer = statistics.median(times_ours), statistics.median(times_peer)
    print(f"  validation of the export (pydantic):        {validate:7.3f} s")
    print(f"  rendering, opsflow.booklet (median of {repeat}):   {ours:7.3f} s  "
          f"(min {min(times_ours):.3f}; {len(odt):,} bytes)")
    print(f"  rendering, bare odfpy script (median of {repeat}): {peer:7.3f} s  "
          f"(min {min(times_peer):.3f}; {len(bare):,} bytes)")
    print(f"  time ratio opsflow / bare odfpy: median {ours / peer:.2f}, min/min "
          f"{min(times_ours) / min(times_peer):.2f}  (target <= 1.5)")
    print(f"  peak memory, opsflow: {memory_ours / 2**20:7.1f} MiB; bare odfpy: "
          f"{memory_peer / 2**20:7.1f} MiB; ratio {memory_ours / memory_peer:.2f} "
          "(target <= 1.5)")
    return odt


def bench_pdf(odt: bytes) -> None:
    if libreoffice() is None:
        print("  PDF conversion: LibreOffice is not installed, skipped")
        return
    start = time.perf_counter()
    pdf = odt_to_pdf(odt)
    print(f"  PDF conversion, LibreOffice (separate):     {time.perf_counter() - start:7.3f} s  "
          f"({len(pdf):,} bytes)")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def bench_flow(exports: list[dict]) -> None:
    """The whole flow run per export, the export fetched by URL from a local HTTP server."""
    import os

    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory() as data, prefect_test_harness(server_startup_timeout=120):
        os.environ["OPSFLOW_DATA_DIR"] = data
        from opsflow.settings import get_settings

        get_settings.cache_clear()
        from flows.booklet import build_abstract_booklet

        served = Path(data) / "served"
        served.mkdir()
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(served)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            small = generate_export(sessions=1, contributions=2, authors=1, abstract_chars=50)
            start = time.perf_counter()
            build_abstract_booklet(small)
            print(f"first flow run (server warm-up, tiny event): "
                  f"{time.perf_counter() - start:7.3f} s")
            for export in exports:
                count = sum(len(s["contributions"]) for s in export["results"][0]["sessions"])
                path = served / f"event-{count}.json"
                path.write_text(json.dumps(export))
                url = f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
                start = time.perf_counter()
                result = build_abstract_booklet(url)
                whole = time.perf_counter() - start
                print(f"whole flow run by URL, {count:,} contributions ({path.stat().st_size:,}"
                      f" bytes of export): {whole:7.3f} s ({result['size']:,} bytes of ODT)")
        finally:
            server.shutdown()
            server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contributions", default="2000,5000",
                        help="comma-separated sizes (default 2000,5000)")
    parser.add_argument("--authors", type=int, default=5)
    parser.add_argument("--abstract-chars", type=int, default=1200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-pdf", action="store_true", help="no LibreOffice conversion")
    parser.add_argument("--no-flow", action="store_true", help="rendering only")
    args = parser.parse_args()
    exports = []
    for count in (int(c) for c in args.contributions.split(",")):
        sessions = max(1, count // 33)  # about 33 contributions a session, as at IPAC
        export = generate_export(sessions, count, args.authors, args.abstract_chars)
        exports.append(export)
        print(f"export: {sessions} sessions, {count:,} contributions, {args.authors} authors "
              f"each, {args.abstract_chars}-character abstracts")
        odt = bench_rendering(export, args.repeat)
        if not args.no_pdf:
            bench_pdf(odt)
    if not args.no_flow:
        bench_flow(exports)


if __name__ == "__main__":
    main()
