"""The window's widgets and key bindings, built once by App.__init__; the colours and wording they show."""

from __future__ import annotations

SURE_COLOUR = "#1565c0"
UNSURE_COLOUR = "#b36b00"
CORRECTED_COLOUR = "#1b5e20"
CLICK_SLOP = 4  # px: a press inside a digit's box that moves less than this is a click selecting the digit
PROMPTS = {"digit": "Draw a digit, then Predict.", "number": "Write a number, digits side by side, then Predict."}
TITLES = {"digit": "digitsite — draw a digit", "number": "digitsite — write a number"}
CORRECT_TITLES = {"digit": "Wrong? It is a…", "number": "Wrong digit? It is a…"}


class WindowLayout:
    """The widgets of App's window and its key bindings (App holds what they do)."""

    # Building the window -----------------------------------------------------------------------

    def _build_canvas(self, outer) -> None:
        tk, size = self.tk, self.size
        # The border lives on a frame around the canvas: canvas pixel (x, y) is then exactly the
        # Pillow image's pixel (x, y), with no highlight ring shifting or hiding the edges.
        border = tk.Frame(outer, bd=1, relief="solid", bg="#888888")
        border.grid(row=0, column=0, rowspan=3, sticky="n")
        self.canvas = tk.Canvas(border, width=size, height=size, bg="white", highlightthickness=0, bd=0,
                                cursor="pencil")
        self.canvas.pack()
        self.canvas.bind("<ButtonPress-1>", self.on_press)
        self.canvas.bind("<B1-Motion>", self.on_drag)
        self.canvas.bind("<ButtonRelease-1>", self.on_release)

    def _build_side_panel(self, outer) -> None:
        """The mode switch, the answer and its wording, Predict and Clear."""
        from tkinter import font as tkfont

        tk, root = self.tk, self.root
        side = tk.Frame(outer, padx=12)
        side.grid(row=0, column=1, sticky="n")
        self.mode_var = tk.StringVar(value="digit")
        modes = tk.Frame(side)
        modes.pack()
        self.mode_buttons = {}
        for mode, text in (("digit", "Digit"), ("number", "Number")):
            button = tk.Radiobutton(modes, text=text, value=mode, variable=self.mode_var, takefocus=False,
                                    command=lambda: self.set_mode(self.mode_var.get()))
            button.pack(side="left")
            self.mode_buttons[mode] = button
        big = tkfont.Font(root=root, size=64, weight="bold")
        self.digit_var = tk.StringVar(value="?")
        self.confidence_var = tk.StringVar(value=PROMPTS["digit"])
        self.alternative_var = tk.StringVar(value="")  # number mode: the second-best reading, "or 176?"
        self.selection_var = tk.StringVar(value="")  # number mode: the selected digit
        self.status_var = tk.StringVar(value="")
        self.digit_label = tk.Label(side, textvariable=self.digit_var, font=big, width=2)
        self.digit_label.pack()
        self.confidence_label = tk.Label(side, textvariable=self.confidence_var, wraplength=220, justify="center")
        self.confidence_label.pack(pady=(0, 8))
        tk.Label(side, textvariable=self.alternative_var, fg=UNSURE_COLOUR).pack()
        tk.Label(side, textvariable=self.selection_var, wraplength=220).pack(pady=(0, 8))
        buttons = tk.Frame(side)
        buttons.pack()
        self.predict_button = tk.Button(buttons, text="Predict", width=9, command=self.predict)
        self.predict_button.pack(side="left", padx=2)
        self.clear_button = tk.Button(buttons, text="Clear", width=9, command=self.clear)
        self.clear_button.pack(side="left", padx=2)

    def _build_corrections(self, outer) -> None:
        """Ten digit buttons when signed in; a note saying why not when anonymous."""
        tk, client = self.tk, self.client
        self.correct_frame = tk.LabelFrame(outer, text=CORRECT_TITLES["digit"], padx=6, pady=6)
        self.digit_buttons = []
        for d in range(10):
            b = tk.Button(self.correct_frame, text=str(d), width=2, state="disabled",
                          command=lambda d=d: self.correct(d))
            b.grid(row=d // 5, column=d % 5, padx=2, pady=2)
            self.digit_buttons.append(b)
        if client.signed_in:
            self.correct_frame.grid(row=1, column=1, sticky="n", pady=(8, 0))
        else:
            tk.Label(outer, text="Anonymous: start with --token to save\nand correct your drawings.",
                     fg="#666666", justify="center").grid(row=1, column=1, sticky="n", pady=(8, 0))

    def _build_status_lines(self, outer) -> None:
        tk, client, size = self.tk, self.client, self.size
        self.status_label = tk.Label(outer, textvariable=self.status_var, fg="#b00020", wraplength=size + 240,
                                     justify="left", anchor="w")
        self.status_label.grid(row=3, column=0, columnspan=2, sticky="we", pady=(8, 0))
        server_text = f"Server: {client.server}" + ("" if client.signed_in else " (anonymous)")
        tk.Label(outer, text=server_text, fg="#666666", anchor="w").grid(row=4, column=0, columnspan=2, sticky="we")

    def _bind_keys(self) -> None:
        root = self.root
        root.bind("<Return>", lambda e: self.predict())
        root.bind("<KP_Enter>", lambda e: self.predict())
        root.bind("<Escape>", lambda e: self.clear())
        root.bind("n", lambda e: self.set_mode("digit" if self.mode == "number" else "number"))
        root.bind("<Left>", lambda e: self.move_selection(-1))
        root.bind("<Right>", lambda e: self.move_selection(1))
        for d in range(10):
            root.bind(str(d), lambda e, d=d: self.correct(d))
