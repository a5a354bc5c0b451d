"""The language-model interface every study calls: decoding transforms, sampling with exact entropy, scoring."""
