# Sourced by scripts/test and scripts/demo: makes sure .venv exists with rtcstack installed, and defines
# run_isolated, which runs a command in a private network namespace with a veth pair (see ../shared/PROTOCOL.md:
# libwebrtc ignores lo, and tests must not send traffic to the machine's external interfaces).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RTCSTACK_VENV:-$root/.venv}"
stamp="$venv/.rtcstack-installed"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    echo "rtcstack: installing into $venv (first run only)" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e "$root[dev,testing]"
    touch "$stamp"
fi
export PATH="$venv/bin:$PATH"

netns_setup='ip link set lo up && ip link add veth0 type veth peer name veth1 &&
    ip addr add 10.99.0.1/24 dev veth0 &&
    ip link set veth0 up && ip link set veth1 up'

run_isolated() {
    if [ -n "${RTCSTACK_NETNS:-}" ]; then
        "$@"
    elif unshare -rn true 2>/dev/null && command -v ip >/dev/null; then
        RTCSTACK_NETNS=1 exec unshare -rn sh -c "$netns_setup"' && exec "$@"' sh "$@"
    else
        echo "rtcstack: unshare is not allowed here; running on the host network" >&2
        "$@"
    fi
}
