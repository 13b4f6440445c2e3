/**
 * The platform ssmkit runs on. This module is the Deno one; `deno task bundle` and the browser
 * type check (web/browser.json) resolve `./deno.ts` to `./browser.ts` instead, so nothing that
 * needs Deno reaches a page.
 *
 * @module
 */

export { platform } from "./deno.ts";
