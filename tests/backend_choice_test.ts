// On Linux, ssmkit keeps Deno's wgpu to the Vulkan backend unless the user chose backends
// (see preferVulkanOnLinux: the OpenGL backend's EGL library crashes processes at exit).
// Each case runs in a fresh process, since the choice is read once per runtime.
import assert from "node:assert/strict";

async function probe(env: Record<string, string>) {
  const mod = new URL("../runtime/gpu_device.ts", import.meta.url).href;
  const code = `
    import { getGpu } from "${mod}";
    await getGpu();
    const maps = Deno.readTextFileSync("/proc/self/maps");
    console.log(JSON.stringify({
      backend: Deno.env.get("DENO_WEBGPU_BACKEND") ?? null,
      egl: maps.includes("libEGL"),
    }));`;
  const keep = ["PATH", "HOME", "DENO_DIR", "XDG_CACHE_HOME", "MESA_SHADER_CACHE_DIR"];
  const base: Record<string, string> = {};
  for (const k of keep) {
    const v = Deno.env.get(k);
    if (v !== undefined) base[k] = v;
  }
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env: { ...base, ...env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  return JSON.parse(new TextDecoder().decode(out.stdout)) as {
    backend: string | null;
    egl: boolean;
  };
}

Deno.test({
  name: "backends: Vulkan alone on Linux by default, and EGL is never loaded",
  ignore: Deno.build.os !== "linux",
  async fn() {
    assert.deepEqual(await probe({}), { backend: "vulkan", egl: false });
  },
});

Deno.test({
  name: "backends: a DENO_WEBGPU_BACKEND set by the user is left alone",
  ignore: Deno.build.os !== "linux",
  async fn() {
    assert.deepEqual(await probe({ DENO_WEBGPU_BACKEND: "vulkan,dx12" }), {
      backend: "vulkan,dx12",
      egl: false,
    });
    // Proof that the probe sees EGL when the OpenGL backend is allowed.
    const gl = await probe({ DENO_WEBGPU_BACKEND: "vulkan,gl" });
    assert.equal(gl.backend, "vulkan,gl");
    assert.equal(gl.egl, true);
  },
});
