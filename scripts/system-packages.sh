#!/usr/bin/env bash
# System packages Trove uses outside Python: OCR of scanned PDFs and images needs
# tesseract (with English data) and poppler's pdftoppm (docs/configuration.md, OCR).
# As root with apt-get (Debian/Ubuntu, CI) they are installed; otherwise this says
# exactly what to install and setup goes on: without them scans are recorded as
# needs_ocr and `trove status` says so. TROVE_REQUIRE_OCR=1 (.ci/run) makes their
# absence an error.
set -euo pipefail
PACKAGES=(tesseract-ocr tesseract-ocr-eng poppler-utils)

present() {
  command -v tesseract >/dev/null 2>&1 && command -v pdftoppm >/dev/null 2>&1 &&
    tesseract --list-langs 2>/dev/null | grep -qx eng
}

if present; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${PACKAGES[*]} (OCR of scanned documents and images)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
fi
if present; then
  exit 0
fi
cat >&2 <<MSG
OCR is not available: install ${PACKAGES[*]}
  Debian/Ubuntu: sudo apt-get install ${PACKAGES[*]}
  Fedora:        sudo dnf install tesseract tesseract-langpack-eng poppler-utils
  macOS:         brew install tesseract poppler
Without them, scanned PDF pages and images are recorded as needs_ocr.
MSG
if [ "${TROVE_REQUIRE_OCR:-0}" = 1 ]; then
  exit 1
fi
