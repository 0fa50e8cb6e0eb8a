"""The model host (`studio infer`): one long-lived process that keeps base models in
memory with every checkpoint attached as a named PEFT adapter, batches concurrent
requests across adapters, caches deterministic answers and serves them over HTTP."""
