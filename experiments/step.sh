# step DIR LOG python STAGE.py ARGS...: run the stage with --out_dir=DIR, its output to LOG, and mark DIR/done;
# skipped when DIR/done exists (an unfinished DIR starts anew). Sourced by the runners that resume this way.
step() {
    local dir=$1 log=$2; shift 2
    [ -f "$dir/done" ] && return 0
    rm -rf "$dir"
    if "$@" --out_dir="$dir" > "$log" 2>&1; then touch "$dir/done"; else echo "FAILED: $log" >&2; return 1; fi
}
