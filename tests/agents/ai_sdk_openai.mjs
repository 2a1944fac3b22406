// The Vercel AI SDK's OpenAI provider against a Responses endpoint (its default: openai(model)
// is the Responses model, POST <baseURL>/responses): generateText and streamText,
// each with one tool (get_weather) that runs locally, two steps at most (call, then answer).
//
//   AI_SDK_API_KEY=<key> node ai_sdk_openai.mjs <baseURL ending in /v1> <model> <prompt>
//
// Prints one JSON object: {"generate": {...}, "stream": {...}}, each with the final text, the
// finish reason, the tool calls and results of every step, and the number of steps. An error
// is printed as {"error": ...} and exits 1.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, isStepCount, streamText, tool } from "ai";
import { z } from "zod";

const [baseURL, model, prompt] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey: process.env.AI_SDK_API_KEY });

const tools = {
  get_weather: tool({
    description: "The current weather in a city",
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => ({ city, temperature_c: 21 }),
  }),
};

function summary(steps, text, finishReason) {
  return {
    text,
    finishReason,
    steps: steps.length,
    toolCalls: steps.flatMap((s) => s.toolCalls.map((c) => ({ toolName: c.toolName, input: c.input }))),
    toolResults: steps.flatMap((s) => s.toolResults.map((r) => ({ toolName: r.toolName, output: r.output }))),
  };
}

async function main() {
  const common = { model: openai(model), prompt, tools, stopWhen: isStepCount(2), maxRetries: 0 };
  const gen = await generateText(common);
  const out = { generate: summary(gen.steps, gen.text, gen.finishReason) };
  const errors = [];
  const st = streamText({ ...common, onError: ({ error }) => errors.push(String(error)) });
  let streamed = "";
  for await (const delta of st.textStream) streamed += delta;
  out.stream = { ...summary(await st.steps, await st.text, await st.finishReason), streamed, errors };
  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.log(JSON.stringify({ error: String(err), data: err?.responseBody ?? null }));
  process.exit(1);
});
