"""Stage 5: prove the tuned model is better at the task and not worse at anything else.

runner        stage entry: every suite for base and tuned, report, plots, gates
generate      batched greedy generation with the training chat template
text_metrics  fact accuracy, EM, token F1, BLEU, ROUGE, classification, JSON, memorisation
metrics       loss, perplexity, mean token accuracy (need the model)
suites        task / regression / safety / generalisation scorers (pure)
safety        refusal detector and refusal rates
gates         `evaluation.gates` parsing and checking
plots, report loss curve, metric bars, report.md / report.json
compare       any run vs any run, per-example diffs
review        blind A/B human review export/import (review_page renders the HTML)
judge         LLM-as-judge, each pair in both orders
"""
