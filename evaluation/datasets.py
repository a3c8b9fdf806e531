"""Labelled detection sets on disk: COCO json, Pascal VOC xml and YOLO txt, read into one form and written back.

    samples, class_names = load_dataset(path)            # layout auto-detected (detect_layout)
    write_dataset(out_dir, images, boxes, classes, class_names, layout="coco" | "voc" | "yolo")

A `Sample` is one image: its path, boxes (N, 4) float64 as x1, y1, x2, y2 in pixels of that image (x2, y2 are the
far edges: a box covering pixel columns 3..7 is x1 = 3, x2 = 8) and classes (N,) int64 indices into class_names.

Layouts (what `write_dataset` writes and `load_dataset` recognises):

  coco  DIR/annotations.json + DIR/images/NAME.png. bbox = [x, y, w, h]; category ids are 1..K in class order.
        Loading: a .json file or a folder holding one (or annotations/instances_*.json, the COCO release layout);
        classes are the categories sorted by id; image files are looked up next to the json, in images/, in the
        parent folder and, for annotations/instances_SPLIT.json, in SPLIT/. Crowd annotations (iscrowd=1) are left
        out.
  voc   DIR/Annotations/ID.xml + DIR/JPEGImages/FILE (+ ImageSets/Main/SPLIT.txt, labels.txt). VOC pixel indices
        are 1-based and inclusive: xmin = x1 + 1, xmax = x2 for integer boxes, so x1 = xmin - 1, x2 = xmax on
        loading. Classes: labels.txt (one per line) if present, else the 20 VOC classes when every name is one of
        them, else the sorted names found. Objects marked difficult are left out (as VOC's own evaluation does).
        `split` picks ImageSets/Main/SPLIT.txt; without it every xml in Annotations/ is read.
  yolo  DIR/images/NAME.png + DIR/labels/NAME.txt with lines "class cx cy w h", normalized to the image size
        (read from the image header); classes from classes.txt, obj.names or data.yaml `names`. An image without
        a label file has no objects.
"""

from __future__ import annotations

import json
import logging
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from snnc.ir.errors import SnncError
from snnc.compiler.images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

LAYOUTS = ("coco", "voc", "yolo")
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


@dataclass
class Sample:
    """One labelled image. boxes_xyxy (N, 4) float64 in pixels, classes (N,) int64; width/height 0 when unknown."""

    image_path: Path | None
    boxes_xyxy: np.ndarray
    classes: np.ndarray
    width: int = 0
    height: int = 0
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image_path is not None:
            self.image_path = Path(self.image_path)
        self.boxes_xyxy = np.asarray(self.boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        if self.boxes_xyxy.shape[0] != self.classes.shape[0]:
            raise ValueError(f"{self.image_path}: {self.boxes_xyxy.shape[0]} boxes but {self.classes.shape[0]} classes")


# ---- layout detection -------------------------------------------------------------------------------------------

def _is_coco_json(path: Path) -> bool:
    try:
        with open(path) as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return '"images"' in head or '"annotations"' in head or '"categories"' in head


def _coco_json_in(folder: Path) -> Path | None:
    cands = sorted(p for p in folder.glob("*.json") if _is_coco_json(p))
    if not cands and (folder / "annotations").is_dir():
        cands = sorted(p for p in (folder / "annotations").glob("instances_*.json"))
    if len(cands) > 1:
        raise SnncError(f"{folder}: several COCO json files ({', '.join(p.name for p in cands)}); pass one of them")
    return cands[0] if cands else None


def detect_layout(path: str | Path) -> str:
    """'coco', 'voc' or 'yolo' for a dataset file or folder; SnncError saying what was looked for otherwise."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        raise SnncError(f"{path}: not a dataset; pass a COCO .json file or a dataset folder")
    if not path.is_dir():
        raise SnncError(f"{path}: no such dataset file or folder")
    if (path / "Annotations").is_dir():
        return "voc"
    if (path / "labels").is_dir():
        return "yolo"
    if _coco_json_in(path) is not None:
        return "coco"
    raise SnncError(f"{path}: no dataset layout recognised; expected a COCO json (annotations.json), VOC "
                    "Annotations/ + JPEGImages/, or YOLO images/ + labels/")


def load_dataset(path: str | Path, layout: str | None = None, split: str | None = None) -> tuple[list[Sample], list[str]]:
    """(samples, class_names) of a labelled set in any of the three layouts (auto-detected unless `layout`)."""
    layout = layout or detect_layout(path)
    if layout == "coco":
        return load_coco(path)
    if layout == "voc":
        return load_voc(path, split)
    if layout == "yolo":
        return load_yolo(path)
    raise SnncError(f"unknown dataset layout {layout!r}; expected one of {LAYOUTS}")


# ---- COCO -------------------------------------------------------------------------------------------------------

def _image_root(json_path: Path, file_names: list[str]) -> Path:
    d = json_path.parent
    roots = [d, d / "images", d.parent, d.parent / "images"]
    if json_path.stem.startswith("instances_"):
        roots.insert(0, d.parent / json_path.stem[len("instances_"):])
    for name in file_names[:1]:
        for root in roots:
            if (root / name).is_file():
                return root
        raise SnncError(f"{json_path}: image {name!r} not found in {', '.join(str(r) for r in roots)}")
    return d


def load_coco(path: str | Path) -> tuple[list[Sample], list[str]]:
    path = Path(path)
    json_path = path if path.is_file() else _coco_json_in(path)
    if json_path is None:
        raise SnncError(f"{path}: no COCO json file found")
    try:
        data = json.loads(json_path.read_text())
        images, cats = data["images"], data["categories"]
        anns = data.get("annotations", [])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SnncError(f"{json_path}: not a COCO detection file ({exc.__class__.__name__}: {exc})") from None
    cats = sorted(cats, key=lambda c: c["id"])
    cls_of = {c["id"]: i for i, c in enumerate(cats)}
    names = [str(c["name"]) for c in cats]
    root = _image_root(json_path, [im["file_name"] for im in images])
    per_image: dict[int, list[dict]] = {im["id"]: [] for im in images}
    crowd = 0
    for a in anns:
        if a.get("iscrowd", 0):
            crowd += 1
            continue
        per_image.setdefault(a["image_id"], []).append(a)
    if crowd:
        log.info("%s: %d crowd annotations left out", json_path, crowd)
    samples = []
    for im in images:
        objs = per_image[im["id"]]
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in objs], dtype=np.float64).reshape(-1, 4)
        classes = np.array([cls_of[a["category_id"]] for a in objs], dtype=np.int64)
        samples.append(Sample(root / im["file_name"], boxes, classes, int(im.get("width", 0)),
                              int(im.get("height", 0)), {"id": im["id"]}))
    return samples, names


def coco_dict(samples: Sequence[Sample], class_names: Sequence[str], file_names: Sequence[str] | None = None) -> dict:
    """The COCO detection dict of samples: image ids 1..N in order, category ids 1..K in class order."""
    images, anns = [], []
    for i, s in enumerate(samples):
        name = file_names[i] if file_names is not None else (s.image_path.name if s.image_path else f"{i:06d}.png")
        images.append({"id": i + 1, "file_name": name, "width": int(s.width), "height": int(s.height)})
        for box, cls in zip(s.boxes_xyxy, s.classes):
            x1, y1, x2, y2 = (float(v) for v in box)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(cls) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    cats = [{"id": k + 1, "name": str(n), "supercategory": "none"} for k, n in enumerate(class_names)]
    return {"info": {"description": "written by snnc"}, "images": images, "annotations": anns, "categories": cats}


# ---- Pascal VOC -------------------------------------------------------------------------------------------------

def _voc_names(folder: Path, found: set[str]) -> list[str]:
    for fname in ("labels.txt", "classes.txt"):
        f = folder / fname
        if f.is_file():
            return [ln.strip() for ln in f.read_text().splitlines() if ln.strip()]
    if found <= set(VOC_CLASSES):
        return list(VOC_CLASSES)
    return sorted(found)


def load_voc(path: str | Path, split: str | None = None) -> tuple[list[Sample], list[str]]:
    folder = Path(path)
    ann_dir = folder / "Annotations"
    if split is not None:
        listing = folder / "ImageSets" / "Main" / f"{split}.txt"
        if not listing.is_file():
            raise SnncError(f"{folder}: no split {split!r} ({listing} is missing)")
        xmls = [ann_dir / f"{ln.split()[0]}.xml" for ln in listing.read_text().splitlines() if ln.strip()]
    else:
        xmls = sorted(ann_dir.glob("*.xml"))
    parsed = []
    for x in xmls:
        try:
            root = ET.parse(x).getroot()
        except (ET.ParseError, OSError) as exc:
            raise SnncError(f"{x}: not a readable VOC annotation ({exc})") from None
        fname = root.findtext("filename") or f"{x.stem}.jpg"
        size = root.find("size")
        w = int(float(size.findtext("width", "0"))) if size is not None else 0
        h = int(float(size.findtext("height", "0"))) if size is not None else 0
        objs = []
        for o in root.findall("object"):
            if int(float(o.findtext("difficult", "0") or 0)):
                continue
            bb = o.find("bndbox")
            xmin, ymin, xmax, ymax = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            objs.append((o.findtext("name").strip(), [xmin - 1, ymin - 1, xmax, ymax]))
        parsed.append((x, fname, w, h, objs))
    names = _voc_names(folder, {n for *_, objs in parsed for n, _ in objs})
    index = {n: i for i, n in enumerate(names)}
    samples = []
    for x, fname, w, h, objs in parsed:
        unknown = [n for n, _ in objs if n not in index]
        if unknown:
            raise SnncError(f"{x}: class {unknown[0]!r} is not in the class list {names}")
        img = folder / "JPEGImages" / fname
        samples.append(Sample(img, [b for _, b in objs], [index[n] for n, _ in objs], w, h, {"id": x.stem}))
    return samples, names


def _voc_xml(fname: str, w: int, h: int, boxes: np.ndarray, classes: np.ndarray, names: Sequence[str]) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = fname
    size = ET.SubElement(root, "size")
    for k, v in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, k).text = str(v)
    ET.SubElement(root, "segmented").text = "0"
    for box, cls in zip(boxes, classes):
        o = ET.SubElement(root, "object")
        ET.SubElement(o, "name").text = str(names[int(cls)])
        ET.SubElement(o, "pose").text = "Unspecified"
        ET.SubElement(o, "truncated").text = "0"
        ET.SubElement(o, "difficult").text = "0"
        bb = ET.SubElement(o, "bndbox")
        x1, y1, x2, y2 = (float(v) for v in box)
        for k, v in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(bb, k).text = _num(v)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.3f}"


# ---- YOLO -------------------------------------------------------------------------------------------------------

def _yolo_names(folder: Path) -> list[str] | None:
    for fname in ("classes.txt", "obj.names"):
        f = folder / fname
        if f.is_file():
            return [ln.strip() for ln in f.read_text().splitlines() if ln.strip()]
    f = folder / "data.yaml"
    if f.is_file():
        try:
            import yaml  # type: ignore

            names = yaml.safe_load(f.read_text()).get("names")
        except ImportError:
            names = _names_from_simple_yaml(f.read_text())
        if isinstance(names, dict):
            return [str(names[k]) for k in sorted(names, key=int)]
        if isinstance(names, list):
            return [str(n) for n in names]
    return None


def _names_from_simple_yaml(text: str):
    """`names: [a, b]` or a block of `  0: a` lines, without PyYAML."""
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        if ln.startswith("names:"):
            rest = ln[len("names:"):].strip()
            if rest.startswith("["):
                return [t.strip().strip("'\"") for t in rest.strip("[]").split(",") if t.strip()]
            out = {}
            for sub in lines[i + 1:]:
                if not sub.startswith((" ", "\t")) or ":" not in sub:
                    break
                k, v = sub.split(":", 1)
                out[int(k.strip().lstrip("- "))] = v.strip().strip("'\"")
            return out
    return None


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size  # (width, height)
    except Exception as exc:  # PIL raises OSError, SyntaxError, DecompressionBombError, ...
        raise SnncError(f"{path}: not a readable image ({exc.__class__.__name__}); use a jpg or png") from None


def load_yolo(path: str | Path) -> tuple[list[Sample], list[str]]:
    folder = Path(path)
    img_dir, lbl_dir = folder / "images", folder / "labels"
    if not img_dir.is_dir():
        raise SnncError(f"{folder}: YOLO layout needs images/ beside labels/")
    images = sorted(p for p in img_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    names = _yolo_names(folder)
    samples = []
    max_cls = -1
    for img in images:
        lbl = (lbl_dir / img.relative_to(img_dir)).with_suffix(".txt")
        w, h = _image_size(img)
        rows = []
        if lbl.is_file():
            for n, ln in enumerate(lbl.read_text().splitlines(), 1):
                parts = ln.split()
                if not parts:
                    continue
                if len(parts) != 5:
                    raise SnncError(f"{lbl}:{n}: expected 'class cx cy w h', got {ln!r}")
                rows.append([float(v) for v in parts])
        a = np.array(rows, dtype=np.float64).reshape(-1, 5)
        cx, cy, bw, bh = a[:, 1] * w, a[:, 2] * h, a[:, 3] * w, a[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        classes = a[:, 0].astype(np.int64)
        if classes.size:
            max_cls = max(max_cls, int(classes.max()))
        samples.append(Sample(img, boxes, classes, w, h, {"id": img.stem}))
    if names is None:
        log.warning("%s: no classes.txt, obj.names or data.yaml; naming classes by index", folder)
        names = [str(i) for i in range(max_cls + 1)]
    elif max_cls >= len(names):
        raise SnncError(f"{folder}: class index {max_cls} but only {len(names)} class names")
    return samples, names


# ---- writing ----------------------------------------------------------------------------------------------------

def write_dataset(out_dir: str | Path, images: Sequence[np.ndarray | str | Path], boxes: Sequence[np.ndarray],
                  classes: Sequence[np.ndarray], class_names: Sequence[str], layout: str = "coco",
                  split: str = "val", stems: Sequence[str] | None = None) -> Path:
    """Write a labelled set in `layout`; images are (H, W, 3) uint8 arrays (saved as PNG) or files (copied).

    Boxes (N, 4) x1, y1, x2, y2 in pixels, classes (N,) indices into class_names. Returns the path that
    load_dataset reads (the json file for coco, the folder otherwise).
    """
    if layout not in LAYOUTS:
        raise SnncError(f"unknown dataset layout {layout!r}; expected one of {LAYOUTS}")
    from PIL import Image

    out = Path(out_dir)
    img_dir = out / ("JPEGImages" if layout == "voc" else "images")
    img_dir.mkdir(parents=True, exist_ok=True)
    stems = list(stems) if stems is not None else [f"{i:06d}" for i in range(len(images))]
    samples, fnames = [], []
    for stem, img, b, c in zip(stems, images, boxes, classes):
        if isinstance(img, (str, Path)):
            src = Path(img)
            fname = stem + src.suffix.lower()
            shutil.copyfile(src, img_dir / fname)
            w, h = _image_size(src)
        else:
            arr = np.asarray(img, dtype=np.uint8)
            fname = stem + ".png"
            Image.fromarray(arr).save(img_dir / fname)
            h, w = arr.shape[:2]
        fnames.append(fname)
        samples.append(Sample(img_dir / fname, b, c, w, h))
    if layout == "coco":
        path = out / "annotations.json"
        path.write_text(json.dumps(coco_dict(samples, class_names, fnames)) + "\n")
        return path
    if layout == "voc":
        (out / "Annotations").mkdir(exist_ok=True)
        (out / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        for stem, fname, s in zip(stems, fnames, samples):
            (out / "Annotations" / f"{stem}.xml").write_text(
                _voc_xml(fname, s.width, s.height, s.boxes_xyxy, s.classes, class_names))
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
        (out / "labels.txt").write_text("".join(f"{n}\n" for n in class_names))
        return out
    (out / "labels").mkdir(exist_ok=True)
    for stem, s in zip(stems, samples):
        lines = []
        for box, cls in zip(s.boxes_xyxy, s.classes):
            x1, y1, x2, y2 = box
            lines.append(f"{int(cls)} {(x1 + x2) / 2 / s.width:.6f} {(y1 + y2) / 2 / s.height:.6f} "
                         f"{(x2 - x1) / s.width:.6f} {(y2 - y1) / s.height:.6f}\n")
        (out / "labels" / f"{stem}.txt").write_text("".join(lines))
    (out / "classes.txt").write_text("".join(f"{n}\n" for n in class_names))
    (out / "data.yaml").write_text(f"path: .\n{split}: images\nnames:\n" +
                                   "".join(f"  {i}: '{n}'\n" for i, n in enumerate(class_names)))
    return out
