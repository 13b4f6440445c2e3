// On Linux, ssmkit keeps Deno's wgpu to the Vulkan backend unless the user chose backends
// (see preferVulkanOnLinux: the OpenGL backend's EGL library crashes processes at exit), and
// turns off Mesa's device-select layer (it prints XDG_RUNTIME_DIR errors without a display).
// Each case runs in a fresh process, since the choice is read once per runtime.
import assert from "node:assert/strict";

interface Probe {
  backend: string | null;
  deviceSelect: string | null;
  /** The EGL libraries mapped into the process, sorted. */
  egl: string[];
  stderr: string;
}

async function probe(env: Record<string, string>): Promise<Probe> {
  const mod = new URL("../runtime/gpu_device.ts", import.meta.url).href;
  const code = `
    import { getGpu } from "${mod}";
    await getGpu();
    const maps = Deno.readTextFileSync("/proc/self/maps").split("\\n");
    const egl = [...new Set(maps.map((l) => l.split(/\\s+/)[5] ?? "").filter((p) => /libEGL/.test(p)))];
    console.log(JSON.stringify({
      backend: Deno.env.get("DENO_WEBGPU_BACKEND") ?? null,
      deviceSelect: Deno.env.get("NODEVICE_SELECT") ?? null,
      egl: egl.sort(),
    }));`;
  const keep = [
    "PATH",
    "HOME",
    "DENO_DIR",
    "XDG_CACHE_HOME",
    "MESA_SHADER_CACHE_DIR",
    "VK_DRIVER_FILES",
    "__EGL_VENDOR_LIBRARY_FILENAMES",
    "LD_LIBRARY_PATH",
  ];
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
  return { ...JSON.parse(new TextDecoder().decode(out.stdout)), stderr };
}

Deno.test({
  name: "backends: Vulkan alone on Linux by default, and the GL backend's EGL is never loaded",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const chosen = await probe({});
    assert.equal(chosen.backend, "vulkan");
    // Some Vulkan drivers (NVIDIA's) load EGL libraries themselves; what ssmkit controls is that
    // the default loads exactly what a Vulkan-only process loads (none at all on Mesa).
    const vulkanOnly = await probe({ DENO_WEBGPU_BACKEND: "vulkan" });
    assert.deepEqual(chosen.egl, vulkanOnly.egl);
  },
});

Deno.test({
  name: "backends: a DENO_WEBGPU_BACKEND set by the user is left alone",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const user = await probe({ DENO_WEBGPU_BACKEND: "vulkan,dx12" });
    assert.equal(user.backend, "vulkan,dx12");
    // Proof that the probe sees EGL when the OpenGL backend is allowed.
    const gl = await probe({ DENO_WEBGPU_BACKEND: "vulkan,gl" });
    assert.equal(gl.backend, "vulkan,gl");
    assert.notDeepEqual(gl.egl, []);
  },
});

Deno.test({
  name: "backends: no XDG_RUNTIME_DIR noise from Mesa's device-select layer, unless asked for",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const quiet = await probe({});
    assert.equal(quiet.deviceSelect, "1");
    assert.doesNotMatch(quiet.stderr, /XDG_RUNTIME_DIR/);
    const user = await probe({ NODEVICE_SELECT: "0" });
    assert.equal(user.deviceSelect, "0");
  },
});
