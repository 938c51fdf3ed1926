#include "engine/model/calibration_text.h"

namespace brickserve {

std::string_view DefaultCalibrationText() {
  static constexpr char kText[] = R"(The old lighthouse stood at the edge of the cliff, and every night its keeper climbed the ninety-two steps to light the lamp. Nobody in the village remembered a time when the light had failed.

"Are you coming tomorrow?" she asked. "The train leaves at 7:45, and I don't want to wait on the platform alone."
"Yes," he said, after a pause. "But only if it stops raining."

Ingredients:
- 2 cups of flour
- 1 teaspoon of salt
- 3 eggs, beaten
- 250 ml of warm milk

Mix the dry ingredients first; then add the eggs and the milk, stirring slowly until the batter is smooth.

def mean(values):
    """Returns the arithmetic mean of a non-empty list."""
    return sum(values) / len(values)

In 1969, Apollo 11 landed on the Moon. The mission lasted 8 days, 3 hours and 18 minutes; the astronauts brought back 21.5 kg of lunar rock.

| City   | Population | Country |
|--------|------------|---------|
| Paris  | 2,102,650  | France  |
| Nairobi| 4,397,073  | Kenya   |

Q: What is the capital of Australia?
A: Canberra, not Sydney, although many people guess the larger city.

The committee will meet on Tuesday (not Monday, as announced earlier). Please send your comments to the secretary before noon: late submissions cannot be considered.

Photosynthesis converts light energy into chemical energy. Plants absorb carbon dioxide and water, and, using sunlight, produce glucose and oxygen.

Error: file "config.yaml" not found at line 42. Check the path and try again.

She laughed. He didn't. The silence that followed was longer than either of them expected... Then, at last, the kettle whistled.)";
  return kText;
}

}  // namespace brickserve
