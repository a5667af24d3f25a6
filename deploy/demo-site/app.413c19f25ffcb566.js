// edgecdn demo: this file's name carries the xxh3-64 of its bytes, so edges cache it forever.
document.addEventListener("DOMContentLoaded", () => {
  const out = document.getElementById("status");
  fetch("/blob.bin", { method: "HEAD" })
    .then((r) => {
      out.textContent = `blob.bin: ${r.headers.get("Content-Length")} bytes, ` +
        `X-Cache ${r.headers.get("X-Cache") || "(direct from origin)"}`;
    })
    .catch((e) => { out.textContent = `HEAD failed: ${e}`; });
});
