"""MME-shaped docs from the shapes rows; prompts and scoring are lmms-eval's own MME functions (imported)."""

from lmms_eval.tasks.mme.utils import mme_aggregate_results, mme_doc_to_text, mme_process_results  # noqa: F401

COLOURS = ["red", "green", "blue", "yellow"]


def shapes_to_mme_pairs(dataset):
    """Each shapes row -> two MME docs on its image (question_id = the image): 'Is the <shape> <colour>?'
    (yes) then the same question about the next colour (no); category 'color' (an MME perception category)."""

    def expand(batch):
        out = {"question_id": [], "image": [], "question": [], "answer": [], "category": []}
        for qid, image, shape, colour in zip(batch["question_id"], batch["image"], batch["shape"], batch["colour"]):
            other = COLOURS[(COLOURS.index(colour) + 1) % len(COLOURS)]
            for asked, answer in ((colour, "Yes"), (other, "No")):
                out["question_id"].append(qid)
                out["image"].append(image)
                out["question"].append(f"Is the {shape} {asked}? Please answer yes or no.")
                out["answer"].append(answer)
                out["category"].append("color")
        return out

    return dataset.map(expand, batched=True, remove_columns=dataset.column_names)
