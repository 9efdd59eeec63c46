"""A number-mode answer and its wording: what the window says about a number the server read."""

from __future__ import annotations

from dataclasses import dataclass, field


def _digit_positions(positions: list[int]) -> str:
    """[1] -> "digit 2", [0, 2] -> "digits 1 and 3": people count digits from 1."""
    names = [str(i + 1) for i in positions]
    if len(names) == 1:
        return f"digit {names[0]}"
    return f"digits {', '.join(names[:-1])} and {names[-1]}"


@dataclass
class NumberReading:
    """A number-mode answer and what the user has done with it since: the selected digit, the corrections.

    No Tk in here, so the wording can be tested alone. `segmentation` and `alternative` are newer than number
    mode itself: older servers leave them out, and each is read only when present.
    """

    answer: dict
    corrections: dict[int, int] = field(default_factory=dict)
    selected: int = 0

    def __post_init__(self) -> None:
        unsure = self.unsure()
        self.selected = unsure[0] if unsure else 0  # start where there is most likely something to fix

    @property
    def digits(self) -> list[dict]:
        return self.answer.get("digits") or []

    def value(self, index: int) -> int:
        return self.corrections.get(index, self.digits[index].get("digit"))

    @property
    def number(self) -> str:
        """The number as it stands now: the server's reading with the user's corrections."""
        return "".join(str(self.value(i)) for i in range(len(self.digits)))

    def unsure(self) -> list[int]:
        """The digits the server was unsure of and the user has not corrected (positions from 0)."""
        return [i for i, d in enumerate(self.digits) if d.get("uncertain") and i not in self.corrections]

    def doubts(self) -> list[str]:
        doubts = []
        if self.unsure():
            doubts.append(f"not sure of {_digit_positions(self.unsure())}")
        if (self.answer.get("segmentation") or {}).get("uncertain"):
            # A correction cannot fix a wrong split (two digits read as one), so this doubt stays.
            doubts.append("not sure where one digit ends and the next begins")
        if not doubts and self.answer.get("uncertain") and not self.corrections:
            doubts.append("not sure of it")  # unsure overall, and the server did not say of what
        return doubts

    def message(self) -> str:
        if not self.digits:
            return "I found no digits: write them bigger, side by side."
        unsure, doubts = self.unsure(), self.doubts()
        if doubts:
            shown = "".join("?" if i in unsure else str(self.value(i)) for i in range(len(self.digits)))
            return f"I read {shown} — {'; '.join(doubts)}."
        if self.corrections:
            return f"It's {self.number} (corrected; I read {self.answer.get('number')})."
        return f"It's {self.number}."

    def alternative(self) -> str | None:
        """The server's second-best reading of the whole number, until the user corrects a digit: from
        then on the user has said what the digits are."""
        alternative = self.answer.get("alternative")
        if alternative in (None, "") or self.corrections or str(alternative) == self.number:
            return None
        return str(alternative)

    def box(self, index: int) -> tuple | None:
        box = self.digits[index].get("box")
        return tuple(box) if isinstance(box, (list, tuple)) and len(box) == 4 else None

    def box_at(self, x: float, y: float) -> int | None:
        """The digit whose box holds image point (x, y); x1 and y1 are exclusive, as the server gives them."""
        for i in range(len(self.digits)):
            box = self.box(i)
            if box is not None and box[0] <= x < box[2] and box[1] <= y < box[3]:
                return i
        return None

    def move(self, step: int) -> None:
        if self.digits:
            self.selected = min(max(self.selected + step, 0), len(self.digits) - 1)

    def describe_selected(self) -> str:
        if not self.digits:
            return ""
        i, digit = self.selected, self.digits[self.selected]
        text = f"Digit {i + 1} of {len(self.digits)}: {self.value(i)}"
        if i in self.corrections:
            return text + " (corrected)"
        if digit.get("uncertain"):
            others = [g.get("digit") for g in digit.get("top_two") or [] if g.get("digit") != digit.get("digit")]
            return text + (f", unsure (or {others[0]}?)" if others else ", unsure")
        return text
