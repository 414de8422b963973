// Drives the unmodified GrowthBook JS SDK against a running trimtab (tests/test_gbapi.py).
//   node gb_sdk.mjs assign API_HOST CLIENT_KEY USERS.json   -> {"values": [{feature: value}, ...]}
//   node gb_sdk.mjs remote API_HOST CLIENT_KEY USERS.json   -> the same through remote evaluation
//   node gb_sdk.mjs stream API_HOST CLIENT_KEY USER.json FEATURE
//        -> one JSON line per value of FEATURE (the first, then each change), until stdin closes
import { readFileSync } from "node:fs";
import { GrowthBook, setPolyfills } from "@growthbook/growthbook";
import { EventSource } from "eventsource";

setPolyfills({ EventSource });
const [mode, apiHost, clientKey, file, feature] = process.argv.slice(2);
const input = JSON.parse(readFileSync(file, "utf8"));

// Streams opened by the SDK keep Node alive: leave once the answer is written.
function finish(answer) {
  process.stdout.write(`${JSON.stringify(answer)}\n`, () => process.exit(0));
}

function valuesOf(gb) {
  const out = {};
  for (const key of Object.keys(gb.getFeatures())) out[key] = gb.getFeatureValue(key, null);
  return out;
}

if (mode === "assign") {
  const gb = new GrowthBook({ apiHost, clientKey });
  const res = await gb.init({ timeout: 10000 });
  if (!res.success) throw new Error(`init failed: ${res.error}`);
  const values = [];
  for (const attributes of input) {
    await gb.setAttributes(attributes);
    values.push(valuesOf(gb));
  }
  gb.destroy({ destroyAllStreams: true });
  finish({ values });
} else if (mode === "remote") {
  const values = [];
  const tracked = [];
  for (const attributes of input) {
    const seen = [];
    const gb = new GrowthBook({
      apiHost,
      clientKey,
      remoteEval: true,
      attributes,
      trackingCallback: (experiment, result) => seen.push([experiment.key, result.key]),
    });
    const res = await gb.init({ timeout: 10000 });
    if (!res.success) throw new Error(`init failed: ${res.error}`);
    values.push(valuesOf(gb));
    tracked.push(seen);
    gb.destroy({ destroyAllStreams: true });
  }
  finish({ values, tracked });
} else if (mode === "stream") {
  const gb = new GrowthBook({ apiHost, clientKey, attributes: input });
  const res = await gb.init({ timeout: 10000, streaming: true });
  if (!res.success) throw new Error(`init failed: ${res.error}`);
  let last;
  const timer = setInterval(() => {
    const value = JSON.stringify(gb.getFeatureValue(feature, null));
    if (value !== last) {
      last = value;
      console.log(value);
    }
  }, 50);
  process.stdin.resume();
  process.stdin.on("end", () => {
    clearInterval(timer);
    gb.destroy({ destroyAllStreams: true });
    process.exit(0);
  });
} else {
  throw new Error(`unknown mode ${mode}`);
}
