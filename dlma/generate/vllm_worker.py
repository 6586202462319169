"""The vLLM side of `generate.engine: vllm`, run as its own process by the python of the
vLLM environment (vLLM pins its own torch and transformers, so it cannot share the
project's environment). It imports nothing from dlma: only the standard library and vllm.

    <vllm python> dlma/generate/vllm_worker.py REQUEST.json OUT.jsonl

REQUEST.json: {"model": dir, "dtype": str, "enforce_eager": bool, "memory_fraction": float, "sampling": {temperature,
top_p, top_k, max_tokens, stop_token_ids}, "requests": [{"prompt_token_ids": [...], "seed": int}]}
OUT.jsonl: one {"token_ids": [...], "finish_reason": str} per request, in request order.
Each request carries its own seed (vLLM's per-request generator), so a sample does not
depend on which requests share its batch.
"""

import json
import sys


def main(request_path: str, out_path: str) -> None:
    try:
        from vllm import LLM, SamplingParams
    except ImportError as exc:  # the wrong python: one line, for the stage's error message
        print(f"vllm is not importable in {sys.executable}: {exc}", file=sys.stderr)
        sys.exit(3)

    with open(request_path) as handle:
        request = json.load(handle)
    sampling = request["sampling"]
    # Each prompt is prefilled whole (no chunked prefill): after a partial prefill vLLM 0.32
    # rewinds a seeded request's generator, which CPU generators cannot do ("CPU Generator
    # does not use offset"). The context length is what this request needs, no more.
    longest = max(len(item["prompt_token_ids"]) for item in request["requests"]) + sampling["max_tokens"]
    llm = LLM(model=request["model"], tokenizer=request["model"], dtype=request["dtype"],
              enforce_eager=request["enforce_eager"], gpu_memory_utilization=request["memory_fraction"], seed=0,
              enable_chunked_prefill=False, max_model_len=longest, max_num_batched_tokens=max(longest, 4096))
    params = [SamplingParams(n=1, temperature=sampling["temperature"], top_p=sampling["top_p"], top_k=sampling["top_k"],
                             max_tokens=sampling["max_tokens"], stop_token_ids=sampling["stop_token_ids"],
                             seed=item["seed"], detokenize=False)
              for item in request["requests"]]
    prompts = [{"prompt_token_ids": item["prompt_token_ids"]} for item in request["requests"]]
    outputs = llm.generate(prompts, sampling_params=params, use_tqdm=True)
    tmp = out_path + ".tmp"
    with open(tmp, "w") as handle:
        for output in outputs:  # vLLM returns them in request order
            completion = output.outputs[0]
            # stop_reason: the stop token id that ended it (None when it was the model's own EOS)
            handle.write(json.dumps({"token_ids": list(completion.token_ids), "finish_reason": completion.finish_reason,
                                     "stop_reason": completion.stop_reason}) + "\n")
    import os

    os.replace(tmp, out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
