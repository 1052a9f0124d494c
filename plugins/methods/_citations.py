"""Published figures more than one built-in method's quality prior rests on.

A method's ``QualityPriors.rtn_loss_fraction`` is the fraction of RTN's weight loss (in
log-perplexity) it leaves at the same bits and group size, from published 7-8B INT4 g128 pairs. A
ratio of log-perplexity changes does not depend on whether the table counts perplexity per word or
per token.
"""

from __future__ import annotations

AWQ_TABLE4 = ("AWQ paper (Lin et al., arXiv 2306.00978) Table 4: WikiText-2 PPL, INT4 g128, LLaMA-7B 5.68 -> "
              "RTN 5.96 / GPTQ-R 5.83 / AWQ 5.78; Llama-2-7B 5.47 -> RTN 5.73 / GPTQ-R 5.63 / AWQ 5.60")
TORCHAO_AWQ = ("pytorch/ao torchao/prototype/awq/README.md: Llama-3-8B-Instruct g128, lm-eval wikitext "
               "perplexity bf16 10.936, awq-uint4 11.409, int4wo-hqq 11.905, int4wo-128 (RTN) 12.380")
