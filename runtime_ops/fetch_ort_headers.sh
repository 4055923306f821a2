#!/bin/sh
# Print a directory holding the ONNX Runtime C/C++ API headers (onnxruntime_c_api.h).
#
# No ORT wheel ships them. Order: $ORT_INCLUDE_DIR if set; else a cached copy of Debian
# trixie's libonnxruntime-dev (ORT API 21, the oldest API the op library targets: API-21
# headers run on every newer ORT), fetched with `apt-get download` through a private
# sources list and unpacked with `dpkg-deb -x` into $OQ_CACHE (default ~/.cache/oqcompile).
set -eu
if [ -n "${ORT_INCLUDE_DIR:-}" ]; then
    [ -f "$ORT_INCLUDE_DIR/onnxruntime_c_api.h" ] || { echo "ORT_INCLUDE_DIR=$ORT_INCLUDE_DIR has no onnxruntime_c_api.h" >&2; exit 1; }
    echo "$ORT_INCLUDE_DIR"
    exit 0
fi
cache="${OQ_CACHE:-$HOME/.cache/oqcompile}/ort-headers"
include="$cache/usr/include/onnxruntime"
if [ ! -f "$include/onnxruntime_c_api.h" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/deb"
    echo "deb [trusted=yes] http://deb.debian.org/debian trixie main" > "$work/sources.list"
    apt_options="-o Dir::Etc::SourceList=$work/sources.list -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State::Lists=$work/lists -o Dir::Cache=$work/cache -o Debug::NoLocking=1
        -o APT::Sandbox::User=root"
    # shellcheck disable=SC2086
    if ! apt-get $apt_options -qq update >&2 || ! (cd "$work/deb" && apt-get $apt_options -qq download libonnxruntime-dev >&2); then
        echo "cannot download Debian's libonnxruntime-dev: install it, or set ORT_INCLUDE_DIR to a folder with the ONNX Runtime headers" >&2
        exit 1
    fi
    mkdir -p "$cache"
    dpkg-deb -x "$work"/deb/libonnxruntime-dev_*.deb "$cache"
fi
echo "$include"
