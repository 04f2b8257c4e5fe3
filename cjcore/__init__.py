"""Pure core of the comparative-judgement system: contracts, pairing, Bradley-Terry, grade
projection, completion policy and rate-limit buckets. Nothing here imports Ray or a database."""
